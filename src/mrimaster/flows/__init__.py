"""Metaflow flows over the same stage functions as the CLI: ``train_flow`` (data -> audit ->
split -> train -> evaluate -> calibrate -> register) and ``predict_flow`` (batch prediction
fanned out with ``foreach``). Run locally: ``python -m mrimaster.flows.train_flow run ...``;
on AWS Batch or Kubernetes add ``--with batch`` / ``--with kubernetes`` (README, *Deploy*)."""
