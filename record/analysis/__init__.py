"""The researcher's tables: per participant x stimulus means, baselines, group x stimulus
statistics (pandas for the tables, SciPy/statsmodels for the statistics)."""
