"""`export`: a Detection project exported as a COCO zip, at two sizes (1,000 and 10,000 images;
200 and 2,000 with `--quick`),
the image service's memory watched meanwhile. Goals: exporting 10,000 images grows the service by
at most 64 MB, and by at most 32 MB more than exporting 1,000 does (memory must not follow the
project's size).

The projects are seeded straight into the image service's database and object store (distinct
small JPEGs, two boxes each), so the scenario measures the export, not ten thousand uploads.
`studio_s` runs from the request until the export's status is `done`; the zip is then fetched
through its signed URL and its entries counted.
"""

from __future__ import annotations

import datetime
import io
import time
import zipfile

import pymongo
import requests
from PIL import Image

from ..context import Context
from ..goals import all_met, goal
from ..measure import CpuMeter, RssSampler, mean_cpu

MB = 1_000_000
GROWTH_GOAL_MB = 64.0
SLOPE_GOAL_MB = 32.0


def _jpeg(seed: int) -> bytes:
    picture = Image.new("RGB", (160, 120), (seed % 251, seed // 251 % 251, 90))
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=85)
    return out.getvalue() + seed.to_bytes(4, "big")  # bytes after the end marker: distinct files, same picture


def seed_project(context: Context, count: int) -> int:
    """A new Detection project of `count` images, written where the image service keeps them."""
    project_id = context.account.new_project("Detection", f"bench export {count}")
    db = pymongo.MongoClient("127.0.0.1", context.stack.mongo_port, directConnection=True)["mlstudio_image"]
    store = context.stack.object_store()
    last = db.counters.find_one_and_update({"_id": "images"}, {"$inc": {"seq": count}}, upsert=True,
                                           return_document=pymongo.ReturnDocument.AFTER)["seq"]
    now = datetime.datetime.now(datetime.UTC)
    docs = []
    for image_id in range(last - count + 1, last + 1):
        key = f"images/{project_id}/{image_id}.jpg"
        content = _jpeg(image_id)
        store.put_bytes(key, content, "image/jpeg")
        docs.append({
            "_id": image_id, "project": project_id, "user": context.account.user_id, "tag": f"class {image_id % 5}",
            "title": f"{image_id}.jpg", "description": "", "key": key, "content_type": "image/jpeg", "size": len(content),
            "sha256": f"bench-{image_id}", "width": 160, "height": 120, "video": None, "frame_index": None,
            "timestamp_ms": None, "score": 0.9, "is_train": True, "create_time": now,
            "detections": [{"label": f"class {image_id % 5}", "score": 0.9, "box": [10.0, 12.0, 80.0, 90.5]},
                           {"label": "other", "score": 0.5, "box": [100.0, 20.0, 150.0, 60.0]}],
        })
        if len(docs) == 1000:
            db.images.insert_many(docs)
            docs = []
    if docs:
        db.images.insert_many(docs)
    return project_id


def export(context: Context, project_id: int, timeout_s: float = 600.0) -> dict:
    session = context.account.session
    created = session.post(f"/projects/{project_id}/exports", json={"format": "coco", "val_fraction": 0.2, "seed": 1})
    if created.status_code != 202:
        raise RuntimeError(f"the export answered {created.status_code}: {created.text[:300]}")
    answer = created.json()
    deadline = time.monotonic() + timeout_s
    while answer["status"] not in ("done", "failed", "cancelled"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the export was still {answer['status']} after {timeout_s:.0f} s: {answer['progress']}")
        time.sleep(0.1)
        answer = session.get(f"/projects/{project_id}/exports/{answer['id']}").json()
    if answer["status"] != "done":
        raise RuntimeError(f"the export {answer['status']}: {answer['error']}")
    return answer


def run(context: Context) -> dict:
    sizes = context.settings.export_sizes
    image_pid = context.stack.pid("image")
    figures: dict[int, dict] = {}
    meters: dict[int, CpuMeter] = {}
    for count in sizes:
        project_id = seed_project(context, count)
        with RssSampler(image_pid) as rss, CpuMeter(context.stack.pids()) as cpu:
            started = time.perf_counter()
            answer = export(context, project_id)
            seconds = time.perf_counter() - started
        download = requests.get(answer["url"], timeout=600)
        download.raise_for_status()
        entries = len(zipfile.ZipFile(io.BytesIO(download.content)).namelist())
        meters[count] = cpu
        figures[count] = {"studio_s": seconds, "peak_rss_growth_mb": rss.growth_bytes / MB, "zip_bytes": answer["size"],
                          "zip_entries": entries}
        context.account.session.delete(f"/projects/{project_id}")
    small, large = sizes
    growth, slope = figures[large]["peak_rss_growth_mb"], figures[large]["peak_rss_growth_mb"] - figures[small]["peak_rss_growth_mb"]
    goals = [
        goal(f"peak_rss_growth_mb ({large:,} images) <= {GROWTH_GOAL_MB:g}", growth, GROWTH_GOAL_MB, at_least=False),
        goal(f"growth({large:,}) - growth({small:,}) <= {SLOPE_GOAL_MB:g} MB", slope, SLOPE_GOAL_MB, at_least=False),
    ]
    return {
        "images": large,
        "studio_s": figures[large]["studio_s"],
        "small_studio_s": figures[small]["studio_s"],
        "peak_rss_growth_mb": growth,
        "small_peak_rss_growth_mb": figures[small]["peak_rss_growth_mb"],
        "zip_bytes": figures[large]["zip_bytes"],
        "studio_cpu_s": mean_cpu([meters[large]]),
        "goals": goals,
        "goal_met": all_met(goals),
        "runs": {str(count): figure for count, figure in figures.items()},
    }
