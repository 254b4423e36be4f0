"""A PACS over DICOMweb: search (QIDO-RS), retrieve (WADO-RS), store (STOW-RS), and filing a
segmentation's results back into the source study (DICOM SEG + Comprehensive 3D SR).

Nothing here knows about models except :mod:`mrimaster.pacs.segment`, which calls
:func:`mrimaster.segmentation.study.segment_study`. Public API::

    from mrimaster.pacs import Pacs, PacsConfig, PacsError, pacs_config
    pacs = Pacs(pacs_config())                      # MRIMASTER_DICOMWEB_* settings
    pacs.search_studies(patient_id="P1")            # -> list[StudySummary]
    pacs.retrieve_study(uid, folder)                # -> list[Path] (Part-10 files)
    pacs.store([path_or_dataset, ...])              # -> StoreResult

Importing this package does no work (no settings read, no network).
"""

from mrimaster.pacs.client import Pacs
from mrimaster.pacs.config import PacsConfig, pacs_config
from mrimaster.pacs.errors import PacsError
from mrimaster.pacs.records import StoreResult, StudySummary

__all__ = ["Pacs", "PacsConfig", "PacsError", "StoreResult", "StudySummary", "pacs_config"]
