"""Run every (image, subject) task, in this process or in a pool of worker processes."""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from .images import TestImage
from .measure import Task, measure
from .subjects import point_label


def _worker_init(threads: int) -> None:
    # Each worker gets its share of the cores so parallel jobs do not oversubscribe
    # them (set before torch or numba are imported in the fresh spawned process).
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(threads)
    import mlimg  # noqa: F401 - registers the MLIMG Pillow plugin in this process


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="bench", unit="task", disable=not enabled, dynamic_ncols=True)


def _failed(task: Task, message: str) -> list[dict[str, Any]]:
    return [
        {"image": task.image_name, "subject": task.subject, "point": i, "params": point_label(p), "error": message}
        for i, p in enumerate(task.points)
    ]


def run_tasks(
    images: list[TestImage],
    points: dict[str, tuple[dict[str, Any], ...]],
    jobs: int = 1,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Measure every subject in `points` on every image; rows come back in a stable order."""
    tasks = [Task(im.name, im.pixels, name, pts) for im in images for name, pts in points.items()]
    results: list[list[dict[str, Any]] | None] = [None] * len(tasks)
    with _progress(len(tasks), progress) as bar:
        if jobs <= 1:
            for i, task in enumerate(tasks):
                bar.set_postfix_str(f"{task.subject} on {task.image_name}", refresh=False)
                results[i] = measure(task)
                bar.update()
        else:
            threads = max(1, (os.cpu_count() or 1) // jobs)
            ctx = multiprocessing.get_context("spawn")  # fork + torch threads can deadlock
            with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=(threads,)) as pool:
                futures = {pool.submit(measure, task): i for i, task in enumerate(tasks)}
                for future in as_completed(futures):
                    i = futures[future]
                    try:
                        results[i] = future.result()
                    except Exception as exc:  # e.g. a worker killed by a crash in native code
                        results[i] = _failed(tasks[i], f"worker failed: {type(exc).__name__}: {exc}")
                    bar.set_postfix_str(f"{tasks[i].subject} on {tasks[i].image_name}", refresh=False)
                    bar.update()
    return [row for chunk in results for row in (chunk or [])]
