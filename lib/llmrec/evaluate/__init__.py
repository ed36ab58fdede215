"""Evaluation and explanations.

metrics    ranking and beyond-accuracy metrics computed in Spark (any number of users)
baselines  the ranked lists of each compared model on the serving history
compare    the evaluate job: every model on the same split and protocol, metrics table
report     reports/<run>/report.html and its PNG plots
explain    why an item was recommended: history items, token attributions, a reason
"""
