"""The second stage: a learned ranker over the first stage's candidates.

  cuts      the two runs of the first stage: as of validation (what the ranker learns
            from, labelled by validation) and for serving (what it ranks, evaluated on test)
  features  one function of (candidates, history as of the cut): the ranker's columns
  learn     the `ranker` stage: LambdaMART (xgboost's SparkXGBRanker) on the validation
            cut's candidates, and every knob chosen on validation (llmrec.ranker.choose)
  choose    validation nDCG of each way to order the candidates; the winner and its knobs
"""
