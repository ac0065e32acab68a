"""Studies: faithfulness, class removal and LDS over samplers × m × seeds, with their outputs."""
