"""Class removal: the one-step Newton update that removes a class, against retraining."""
