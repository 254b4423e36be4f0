"""``mrimaster pacs``: search a DICOMweb PACS, segment a study on it, send results back.

The PACS is ``MRIMASTER_DICOMWEB_URL`` (or ``--dicomweb``), with ``MRIMASTER_DICOMWEB_USER`` /
``MRIMASTER_DICOMWEB_PASSWORD`` or ``MRIMASTER_DICOMWEB_TOKEN`` (see docs/pacs.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from mrimaster.settings import Settings

if TYPE_CHECKING:
    from mrimaster.pacs import Pacs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pacs", help="DICOMweb PACS: list studies, segment one, send results",
                       description="Work with a DICOMweb PACS (MRIMASTER_DICOMWEB_URL, or "
                       "--dicomweb): list studies, segment a study and file the DICOM SEG and "
                       "a volume report (Comprehensive 3D SR) back into it.")
    pacs_sub = p.add_subparsers(dest="pacs_command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--dicomweb", metavar="URL", help="DICOMweb root (default: "
                       "MRIMASTER_DICOMWEB_URL), e.g. http://pacs:8042/dicom-web")

    st = pacs_sub.add_parser("studies", help="list studies (QIDO-RS)")
    common(st)
    st.add_argument("--patient", metavar="ID", help="Patient ID")
    st.add_argument("--date", metavar="RANGE", help="study date or range: 20240131, "
                    "20240101-20240131, 2024-01-01..2024-01-31")
    st.add_argument("--accession", metavar="N", help="accession number")
    st.add_argument("--limit", type=int, help="at most this many")
    st.set_defaults(handler=run_studies)

    sg = pacs_sub.add_parser(
        "segment", help="segment a PACS study and store the SEG and SR back into it",
        description="Retrieve the study (WADO-RS), segment it as `seg predict` does, write "
        "seg.nii.gz, volumes.json and OUT/pacs/{seg,sr}.dcm, then store seg.dcm and sr.dcm in "
        "the same study (STOW-RS) unless --dry-run.")
    common(sg)
    sg.add_argument("--study", required=True, metavar="UID", help="StudyInstanceUID")
    sg.add_argument("--out", type=Path, help="run folder (default: runs/pacs/<study UID>)")
    sg.add_argument("--dry-run", action="store_true", help="write the files, send nothing")
    sg.add_argument("--model", default="default", help="segmentation model (default: shipped)")
    sg.add_argument("--runtime", default="auto", help="auto, torch, onnx or openvino")
    sg.add_argument("--device", default="auto", help="auto, cpu, cuda")
    sg.add_argument("--tta", action="store_true", help="test-time augmentation (8 mirrorings)")
    sg.set_defaults(handler=run_segment)

    se = pacs_sub.add_parser("send", help="send (again) the SEG and SR of a run folder",
                             description="Store DIR/pacs/*.dcm (or DIR/*.dcm) in one STOW-RS "
                             "request. Safe to repeat: the SOP Instance UIDs are the same.")
    common(se)
    se.add_argument("dir", type=Path, metavar="DIR", help="the --out folder of `pacs segment`")
    se.set_defaults(handler=run_send)

    li = pacs_sub.add_parser(
        "listen", help="receive studies from scanners and PACS (DICOM C-STORE, C-ECHO)",
        description="A DICOM receiver (C-STORE and C-ECHO SCP) into the web app's database "
        "and store (the settings of `mrimaster serve`): each study, once no instance of it has "
        "arrived for --stable seconds, is stored de-identified as a 3D case with its "
        "segmentation queued (run by `mrimaster serve` or `mrimaster worker`); its original "
        "identifiers are kept encrypted (MRIMASTER_LINK_KEY) so that approved results can be "
        "filed back. Only the AE titles given by --allow may send. See docs/pacs.md.")
    li.add_argument("--allow", required=True, action="append", metavar="AET[,AET...]",
                    help="AE titles that may send (the scanners' and PACS's own titles)")
    li.add_argument("--ae-title", default="MRIMASTER", help="this receiver's AE title "
                    "(default MRIMASTER)")
    li.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                    "127.0.0.1; 0.0.0.0 for every interface)")
    li.add_argument("--port", type=int, default=11112, help="TCP port (default 11112)")
    li.add_argument("--stable", type=float, default=30.0, metavar="S", help="seconds without "
                    "a new instance after which a study is complete (default 30)")
    li.set_defaults(handler=run_listen)


def _pacs(args: argparse.Namespace) -> Pacs:
    import logging

    from mrimaster.pacs import Pacs, pacs_config

    logging.getLogger("dicomweb_client").setLevel(logging.WARNING)  # it logs each request
    return Pacs(pacs_config(url=args.dicomweb))


def run_studies(args: argparse.Namespace, settings: Settings) -> int:
    found = _pacs(args).search_studies(args.patient, args.date, args.accession,
                                       limit=args.limit)
    if not found:
        print("no study matches")
        return 0
    rows = [("STUDY UID", "PATIENT ID", "NAME", "DATE", "ACCESSION", "MOD", "SERIES",
             "INST", "DESCRIPTION")]
    rows += [(s.study_uid, s.patient_id, s.patient_name, s.study_date, s.accession,
              "/".join(s.modalities), str(s.n_series or ""), str(s.n_instances or ""),
              s.description) for s in found]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    return 0


def run_segment(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.models.paths import file_sha256, resolve_model_path
    from mrimaster.pacs.segment import segment_from_pacs
    from mrimaster.segmentation.loading import load_segmenter_for_inference

    pacs = _pacs(args)
    pacs.find_study(args.study)  # a wrong UID or URL fails before the model loads
    seg = load_segmenter_for_inference(args.model, settings.models_dir, args.runtime,
                                       args.device,
                                       check_brain_mri=settings.check_brain_mri)
    version = f"{args.model}@{file_sha256(resolve_model_path(args.model, settings.models_dir, 'seg-default'))[:12]}"  # noqa: E501
    out = args.out or settings.runs_dir / "pacs" / args.study
    done = segment_from_pacs(pacs, args.study, out, seg_model=seg, model_version=version,
                             dry_run=args.dry_run, tta=args.tta)
    vols = done.study.result.volumes_ml
    print("volumes (mL): " + ", ".join(f"{k} {v:.1f}" if v is not None else f"{k} n/a"
                                       for k, v in vols.items()))
    names = ", ".join(str(p) for p in done.files)
    if done.stored is None:
        print(f"dry run: wrote {names}; nothing sent (`mrimaster pacs send {out}` sends them)")
    else:
        print(f"stored in study {args.study}: {names}")
    return 0


def run_send(args: argparse.Namespace, settings: Settings) -> int:
    from mrimaster.pacs.segment import outbox, send_results

    files = outbox(args.dir)  # a wrong folder fails before any connection
    result = send_results(_pacs(args), args.dir)
    print(f"stored {len(result.stored)} instances: {', '.join(p.name for p in files)}")
    return 0


def run_listen(args: argparse.Namespace, settings: Settings) -> int:
    import signal
    import threading
    from types import FrameType

    from mrimaster.pacs.receiver import Receiver, ReceiverConfig, parse_titles
    from mrimaster.serving.config import load_serve_config
    from mrimaster.serving.context import start_up
    from mrimaster.serving.dicom_receive import receiver_user, store_received
    from mrimaster.serving.pacs_service import link_fernet
    from mrimaster.storage.private_files import private_dir

    config = ReceiverConfig(allow=parse_titles(args.allow), ae_title=args.ae_title.strip(),
                            host=args.host, port=args.port, stable_s=args.stable)
    fernet = link_fernet()  # without it no received case could be filed back: refuse first
    ctx, password = start_up(load_serve_config(), load_models=False)
    if password:
        print(f"first start: created the admin account {ctx.config.admin_user!r} with the "
              f"one-time password {password}", flush=True)
    receiver_user(ctx)
    spool = private_dir(ctx.config.app_dir / "dicom-spool")
    receiver = Receiver(config, spool, lambda study: store_received(ctx, study, fernet))
    host, port = receiver.start()
    print(f"DICOM receiver {config.ae_title} on {host}:{port}, accepting "
          f"{', '.join(config.allow)}; a study is complete after {config.stable_s:g} s "
          "without a new instance", flush=True)
    done = threading.Event()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()
    return 0
