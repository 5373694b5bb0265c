"""schemathesis against the served OpenAPI document of a real node: no 5xx, no answer that
breaks the documented schemas, status codes or content types (bounded number of examples)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from dht.testing import dht_network
from tests.support.api import api_node

pytest.importorskip("schemathesis")
pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]
EXAMPLES = 10
CHECKS = ("not_a_server_error,response_schema_conformance,content_type_conformance,"
          "status_code_conformance")


async def test_schemathesis_finds_no_server_errors(tmp_path: Path) -> None:
    async with dht_network(3) as backbone, api_node(backbone, tmp_path / "n") as n:
        await n.client.create_listing({
            "title": "Lamp", "price": {"amount": 1500, "currency": "EUR"},
            "category": "home/decor", "condition": "good", "id": "lamp-0001",
            "location": {"country": "DE", "geohash": "u33db"}})
        await n.client.put_my_profile({"name": "Fuzz"})
        st = Path(sys.executable).parent / "schemathesis"
        proc = await asyncio.create_subprocess_exec(
            str(st), "run", f"{n.api.url}/api/v1/openapi.json",
            "-H", f"Authorization: Bearer {n.api.token}", "--checks", CHECKS,
            "--max-examples", str(EXAMPLES), "--seed", "7", "--workers", "1",
            "--generation-database", "none", "--request-timeout", "30", "--no-color",
            # stopping the node, the endless event stream and the escrow and wallet routes
            # (501 until the escrow driver is attached) are tested elsewhere
            "--exclude-operation-id", "shutdown", "--exclude-operation-id", "streamEvents",
            "--exclude-tag", "escrow", "--exclude-tag", "wallet", "--warnings", "off",
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        report = out.decode(errors="replace")
        assert proc.returncode == 0, report[-6000:]
        assert " passed" in report and "failed" not in report.split("SUMMARY")[-1]
        assert not n.stop.is_set()
