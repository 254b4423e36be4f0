"""What 2D and 3D training share and neither stage owns: experiment tracking
(:mod:`~mrimaster.runs.tracking`), the multi-process launch (:mod:`~mrimaster.runs.distributed`),
where a run's dataset lies (:mod:`~mrimaster.runs.data_roots`) and the lines every model card
opens with (:mod:`~mrimaster.runs.cards`)."""
