"""Event data: the record format, ArrayRecord shards, CMSSW ntuple conversion, Grain pipelines."""
