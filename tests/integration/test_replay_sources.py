import asyncio, json
import pytest
from typer.testing import CliRunner
from phoenix95.cli.main import app
from phoenix95.streams.admin import list_groups
from aiokafka.admin import AIOKafkaAdminClient
import redis

pytestmark = pytest.mark.integration

async def topics(url):
    a = AIOKafkaAdminClient(bootstrap_servers=url); await a.start()
    try: return sorted(await a.list_topics())
    finally: await a.close()

def test_explore(namespace, services):
    r = CliRunner().invoke(app, ["replay", "--signals", "sample", "--json", "--mode", "kafka"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    run = s["run_id"]
    print("TOPICS", [t for t in asyncio.run(topics(services.kafka)) if run in t])
    print("GROUPS", [g for g in asyncio.run(list_groups(services.kafka)) if run in g])
    c = redis.Redis.from_url(services.redis)
    keys = sorted(k.decode() for k in c.scan_iter(match=f"*{run}*", count=1000))
    print("KEYS", len(keys), keys[:10])
    r = CliRunner().invoke(app, ["replay", "clean", run])
    print("CLEAN", r.output)
    print("TOPICS after", [t for t in asyncio.run(topics(services.kafka)) if run in t])
    print("GROUPS after", [g for g in asyncio.run(list_groups(services.kafka)) if run in g])
    print("KEYS after", len(list(c.scan_iter(match=f"*{run}*", count=1000))))
