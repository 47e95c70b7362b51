"""`list_images`: a project of 50,000 images (5,000 with `--quick`) listed whole through the
gateway (`GET /images/all`), against reading the same documents straight from MongoDB. Goal:
`studio_s <= 5 * mongo_read_s`.

The images are inserted straight into the image service's database (metadata only: listing
reads no bytes and signs URLs whether or not the objects exist), so the scenario measures the
reading, not 50,000 uploads. `mongo_read_s` is what the image service's own query costs in a
Python client (pymongo: find, sort by id, decode every document); `studio_s` runs from the
request until the last byte of the answer arrived. The two alternate, after one untimed read of
each (so both find the data in MongoDB's cache). Besides: a deep page by `offset` and by
`after_id`, and the tag summary (`/images/type`).
"""

from __future__ import annotations

import datetime
import time

import pymongo

from ..context import Context
from ..goals import all_met, goal
from ..measure import CpuMeter, Runs, mean_cpu, paired_ratio

RATIO_GOAL = 5.0
TAGS = 5
PAGE = 100


def seed(context: Context, project_id: int, count: int) -> list[int]:
    """`count` image documents of `project_id`, as an upload would have written them."""
    db = pymongo.MongoClient("127.0.0.1", context.stack.mongo_port, directConnection=True)["mlstudio_image"]
    last = db.counters.find_one_and_update({"_id": "images"}, {"$inc": {"seq": count}}, upsert=True,
                                           return_document=pymongo.ReturnDocument.AFTER)["seq"]
    ids = list(range(last - count + 1, last + 1))
    now = datetime.datetime.now(datetime.UTC)
    for start in range(0, count, 5000):
        db.images.insert_many([{
            "_id": image_id, "project": project_id, "user": context.account.user_id, "tag": f"class {image_id % TAGS}",
            "title": f"{image_id}.jpg", "description": "", "key": f"images/{project_id}/{image_id}.jpg",
            "content_type": "image/jpeg", "size": 4000, "sha256": f"{image_id:064x}", "phash": f"{image_id:016x}",
            "width": 224, "height": 224, "video": None, "frame_index": None, "timestamp_ms": None, "score": 0.9,
            "detections": None, "is_train": True, "distinct_bytes": True, "create_time": now,
        } for image_id in ids[start:start + 5000]])
    return ids


def run(context: Context) -> dict:
    count = context.settings.list_images
    project_id = context.new_project("list images")
    ids = seed(context, project_id, count)
    images = pymongo.MongoClient("127.0.0.1", context.stack.mongo_port, directConnection=True)["mlstudio_image"].images
    session = context.account.session
    scope = {"user_id": context.account.user_id, "project_id": project_id}

    def mongo_read() -> int:
        return len(list(images.find({"project": project_id, "deleting": {"$ne": True}}).sort("_id", 1)))

    def studio_read() -> int:
        response = session.get("/images/all", params=scope, timeout=600)
        response.raise_for_status()
        return len(response.content)

    mongo_read(), studio_read()  # untimed: both sides start from a warm cache
    listed = session.get("/images/all", params=scope, timeout=600).json()
    if [image["id"] for image in listed] != ids:
        raise RuntimeError(f"the list answered {len(listed)} images, not the {count} seeded")
    mongo, studio, meters = Runs(), Runs(), []
    body_bytes = 0
    for _ in range(context.settings.repeats):
        mongo.time(mongo_read)
        with CpuMeter(context.stack.pids()) as cpu:
            body_bytes = studio.time(studio_read)
        meters.append(cpu)
    deep = ids[-PAGE - 1]
    by_offset, by_keyset, tags = Runs(), Runs(), Runs()
    for _ in range(context.settings.repeats):
        by_offset.time(lambda: session.get("/images/all", params={**scope, "limit": PAGE, "offset": count - PAGE}))
        by_keyset.time(lambda: session.get("/images/all", params={**scope, "limit": PAGE, "after_id": deep}))
        tags.time(lambda: session.get("/images/type", params=scope))
    ratio = paired_ratio(studio.seconds, mongo.seconds)
    goals = [goal(f"studio_s <= {RATIO_GOAL:g} * mongo_read_s", ratio, RATIO_GOAL, at_least=False)]
    started = time.perf_counter()
    session.delete(f"/projects/{project_id}")
    return {
        "images": count,
        "studio_s": studio.median,
        "mongo_read_s": mongo.median,
        "studio_over_mongo_read": ratio,
        "body_bytes": body_bytes,
        "deep_offset_page_ms": by_offset.median * 1000,
        "deep_after_id_page_ms": by_keyset.median * 1000,
        "tag_summary_ms": tags.median * 1000,
        "project_delete_s": time.perf_counter() - started,
        "studio_cpu_s": mean_cpu(meters),
        "goals": goals,
        "goal_met": all_met(goals),
        "runs": {"studio_s": studio.rounded(), "mongo_read_s": mongo.rounded(), "deep_offset_page_s": by_offset.rounded(),
                 "deep_after_id_page_s": by_keyset.rounded(), "tag_summary_s": tags.rounded()},
    }
