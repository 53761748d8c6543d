"""A bed file checked as a whole: the schema (:mod:`.schema`), then what only the tools that start
VMs and containers know (sppc's options of each container, when sppc is installed)."""

from __future__ import annotations

from spp.integrations.bed import guests
from spp.integrations.bed.schema import Bed, validate
from spp.integrations.bed.yamlsafe import BedError, Document, load_file, load_text


def _container_options(doc: Document, bed: Bed, containers: set[int]) -> list[BedError]:
    errors = []
    for i in sorted(containers):
        c = bed.containers[i]
        try:
            guests.container_launch(bed, c)
        except guests.GuestError as e:
            if not guests.sppc_available():
                break
            errors.append(doc.error(("containers", i, "args" if c.args else "app"), str(e)))
    return errors


def load_bed(path: str) -> Bed:
    return validate(load_file(path), _container_options)


def parse_bed(text: str, file: str = "<bed>") -> Bed:
    return validate(load_text(text, file), _container_options)
