"""The console in a real browser (Debian's chromium, headless, driven by Playwright) against
the real pipeline: clicks produced to Kafka, the events service writing Redis, the
recommender answering over gRPC, the console reading all three.

Set ``CONSOLE_SCREENSHOTS`` to a directory to keep a screenshot of each page there (the
ones in docs/img/ come from this test).
"""

from __future__ import annotations

import json
import os
import random
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recsys.store import KeySchema
from recsys.store.redis_store import RedisFeatureStore
from recsys_tools.harness import wait_for
from recsys_tools.harness.console import (
    ConsoleStack,
    chromium_path,
    click_to_visible_ms,
    console_stack,
    headless_chromium,
    load_ms,
    p95,
)
from recsys_tools.infra.endpoints import KafkaEndpoint
from services.recommender.model import ItemMeta
from services.recommender.training import TrainConfig, build_matrix, train

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium"),
]

PER_CLUSTER = 20
#: the issue's goals: console pages render in < 500 ms at p95, a click shows within 1 s
RENDER_P95_MS = 500.0
CLICK_VISIBLE_MS = 1000.0


def oversubscription() -> float:
    """How many times over its cores the machine is (1 when it is not; at most 4).

    The goals hold on a machine that runs this test alone; on the shared development machine
    the load average reached 40 on 2 cores, every process getting a twentieth of a core, and
    page times grew with it. The budgets are scaled by this factor so the test still fails
    on a console several times slower than the goal, not on a busy machine; the figures
    against the goals themselves come from ``bench.console_browser`` with its load recorded.
    """
    return min(4.0, max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1)))


@pytest.fixture(scope="module")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 items in three clusters; 90 users each clicking in one cluster."""
    rng = random.Random(1)
    users, items = [], []
    for u in range(90):
        for i in rng.sample(range(PER_CLUSTER), 8):
            users.append(f"u{u}")
            items.append(f"i{(u % 3) * PER_CLUSTER + i}")
    item_ids = [f"i{n}" for n in range(3 * PER_CLUSTER)]
    meta = {i: ItemMeta(i, genres=(f"g{int(i[1:]) // PER_CLUSTER}",)) for i in item_ids}
    config = TrainConfig(factors=8, iterations=10, regularization=0.05, num_threads=1)
    store = tmp_path_factory.mktemp("models")
    train(build_matrix(users, items, [1.0] * len(users), item_ids=item_ids), config,
          items=meta).save(store)  # fmt: skip
    return store


@pytest.fixture
def stack(kafka: KafkaEndpoint, redis_url: str, topic: str, key_prefix: str, model_store: Path,
          tmp_path: Path) -> Iterator[ConsoleStack]:  # fmt: skip
    with console_stack(kafka, redis_url, topic, key_prefix, model_store, tmp_path) as running:
        yield running


@pytest.fixture
def browser() -> Iterator[Any]:
    with headless_chromium() as b:
        yield b


def shot(page: Any, name: str) -> None:
    where = os.environ.get("CONSOLE_SCREENSHOTS", "")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(where) / f"console-{name}.png"), full_page=True)


def recommended(page: Any) -> list[str]:
    return [str(x) for x in page.eval_on_selector_all(
        "#recommendations li", "els => els.map(e => e.dataset.item)")]  # fmt: skip


def test_a_click_shows_on_the_user_page_and_the_explanation_link_works(
    stack: ConsoleStack, browser: Any, redis_client: Any, key_prefix: str
) -> None:
    store = RedisFeatureStore(redis_client, KeySchema(key_prefix))
    # the consumer must have joined before a click can be timed: a first click, awaited
    stack.click("warm-up", "i1")
    wait_for(lambda: bool(store.get_user_state("warm-up").recent), 60, "the first click applied")
    page = browser.new_page()
    page.goto(f"{stack.console_url}/users/u0", wait_until="load")
    before = recommended(page)
    assert len(before) == 10 and all(int(i[1:]) < PER_CLUSTER for i in before[:3]), before
    target = before[0]
    elapsed = click_to_visible_ms(stack, page, "u0", target)
    # the recommendations change too: a clicked item is seen, and seen items are left out
    page.wait_for_function(
        "item => ![...document.querySelectorAll('#recommendations li')]"
        ".some(e => e.dataset.item === item)", arg=target, timeout=5000)  # fmt: skip
    assert target not in recommended(page)
    budget = CLICK_VISIBLE_MS * oversubscription()
    assert elapsed < budget, f"click visible after {elapsed:.0f} ms (budget {budget:.0f} ms)"
    shot(page, "user")
    # follow the explanation of the (new) first recommendation
    first = recommended(page)[0]
    page.click(f"#recommendations li[data-item='{first}'] a.why")
    page.wait_for_url(f"**/users/u0/why/{first}")
    contributions = page.eval_on_selector_all("#contribution-list li", "els => els.length")
    assert contributions > 0
    assert page.locator("#contributions").count() == 1  # the chart's canvas
    shot(page, "why")
    page.click("#contribution-list li a")
    page.wait_for_url("**/items/**")
    assert page.locator("#similar-list li").count() > 0
    shot(page, "item")


def test_pages_render_within_the_goal_under_a_click_stream(
    stack: ConsoleStack, browser: Any, redis_client: Any, key_prefix: str
) -> None:
    store = RedisFeatureStore(redis_client, KeySchema(key_prefix))
    for n in range(30):  # a few users with history, and a trending list
        stack.click(f"u{n % 6}", f"i{(n * 7) % 60}")
    wait_for(lambda: bool(store.trending(1)), 60, "trending written")
    page = browser.new_page()
    urls = [f"{stack.console_url}/users/u1", f"{stack.console_url}/items/i3",
            f"{stack.console_url}/users/u1/why/i4", f"{stack.console_url}/system"]  # fmt: skip
    for url in urls:  # first visits compile templates and open the console's channels
        load_ms(page, url)
    times: list[float] = []
    by_url: dict[str, list[float]] = {url: [] for url in urls}
    for n in range(8):
        for url in urls:
            stack.click(f"u{n}", f"i{n * 3}")  # the pipeline keeps working meanwhile
            by_url[url].append(load_ms(page, url))
            times.append(by_url[url][-1])
    budget = RENDER_P95_MS * oversubscription()
    page.goto(f"{stack.console_url}/system")
    # the live figures arrive from the services' metrics: the events chart gets points
    page.wait_for_function("document.querySelector('#rps').textContent !== '–'", timeout=10000)
    page.wait_for_timeout(2500)
    shot(page, "system")
    services = page.eval_on_selector_all(".svc.up", "els => els.map(e => e.textContent)")
    assert set(services) == {"events", "recommender"}
    assert p95(times) < budget, (budget, os.getloadavg(), by_url)


def test_actions_need_the_console_token(stack: ConsoleStack, redis_client: Any,
                                        key_prefix: str) -> None:  # fmt: skip
    store = RedisFeatureStore(redis_client, KeySchema(key_prefix))
    store.suppress("u7", "i3", ttl_s=600)
    url = f"{stack.console_url}/api/users/u7/suppressions/i3:lift"

    def post(headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(url, data=b"", headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return int(reply.status), json.loads(reply.read())
        except urllib.error.HTTPError as err:
            return int(err.code), json.loads(err.read())

    assert post({})[0] == 401
    assert post({"Authorization": "Bearer wrong"})[0] == 401
    assert "i3" in store.get_user_state("u7").suppressed  # refused: nothing changed
    status, body = post({"Authorization": "Bearer test-token"})
    assert (status, body["lifted"]) == (200, True)
    assert "i3" not in store.get_user_state("u7").suppressed
