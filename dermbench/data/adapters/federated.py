"""The federated task: one client per site task, merged into one TaskData.

Sample ids become '<site>/<id>' and ``groups['site']`` names the client; labels keep their index
(0 benign / naevus / nevus, 1 malignant / melanoma), which every site task shares.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dermbench.data.adapters import adapter
from dermbench.data.sample import DatasetError, TaskData


@adapter("federated")
def load(data_root: Path, card) -> TaskData:
    from dermbench.data.locate import load_task
    from dermbench.data.tasks import get_card

    samples, skipped = [], []
    for site in card.sites:
        site_card = get_card(site)
        if len(site_card.classes) != len(card.classes):
            raise DatasetError(f"task card {card.path}: site {site} has {len(site_card.classes)} classes, "
                               f"the federated task {len(card.classes)}; sites must share the label space")
        data = load_task(data_root, site_card)
        for s in data.samples:
            samples.append(replace(s, id=f"{site}/{s.id}", groups={**s.groups, "site": site}))
        skipped += data.skipped
    return TaskData(task=card.name, root=Path(data_root), samples=samples, classes=list(card.classes), skipped=skipped)
