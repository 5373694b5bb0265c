"""Node routes: version (no token), status, shutdown, peers, categories and the OpenAPI document."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from weakref import WeakKeyDictionary

from aiohttp import web

from escrow.chain import EsploraChain
from node.api.context import Call, Reply
from node.api.convert import page
from node.api.registry import Routes
from p2pmarket import __version__
from p2pmarket.api import schemas as s
from p2pmarket.api.events import StoppingEvent
from p2pmarket.identity import peer_id_from_public
from p2pmarket.taxonomy import all_paths

routes = Routes("node")
OPENAPI = web.AppKey("p2pmarket_openapi", dict[str, Any])


@routes.get("/version", name="getVersion", summary="Name and version (needs no token)",
            response=s.Version, auth=False)
async def get_version(call: Call) -> s.Version:
    return s.Version(name="p2pmarket", version=__version__, api="v1")


@routes.get("/node", name="getStatus", summary="Node status", response=s.NodeStatus)
async def get_status(call: Call) -> s.NodeStatus:
    """What runs, what is still starting (`starting`), and a few counts."""
    state = call.state
    uptime = time.monotonic() - state.started
    node = state.node
    if node is None:
        return s.NodeStatus(peer_id=state.peer_id, version=__version__, uptime=uptime,
                            last_event_id=state.hub.last_id, starting=["p2p", "dht"],
                            state="stopping" if state.stopping else "starting")
    dht = node.dht.status()
    listening = f"{dht.listening[0]}:{dht.listening[1]}" if dht.listening else None
    retry = (max(0.0, dht.next_bootstrap_retry - node.dht.clock())
             if dht.next_bootstrap_retry is not None else None)
    driver = node.escrow
    return s.NodeStatus(
        peer_id=node.identity.peer_id, version=__version__, uptime=uptime,
        last_event_id=state.hub.last_id, state="stopping" if state.stopping else "running",
        starting=[] if node.ready.is_set() else ["dht-join"],
        dht=s.DhtStatusOut(listening=listening, contacts=dht.contacts,
                           records_held=dht.records_held, bootstrapped=dht.bootstrapped,
                           bootstrap_addrs=dht.bootstrap_addrs, next_bootstrap_retry=retry),
        listen_addrs=node.host.listen_addrs(), connected_peers=len(node.host.connected_peers()),
        my_listings=len(node.listings.mine()), cached_listings=node.search.cache.count(),
        offers=len(node.trade.store.negotiation_ids()), orders=len(node.trade.store.order_ids()),
        escrow=driver is not None,
        chain=await chain_status(driver.chain) if driver is not None else None)


_chain_seen: WeakKeyDictionary[object, tuple[float, s.ChainStatusOut]] = WeakKeyDictionary()
CHAIN_FRESH = 10.0  # seconds a tip reading is shown before it is read again
CHAIN_TIMEOUT = 2.0


async def chain_status(chain: EsploraChain) -> s.ChainStatusOut:
    """The backend's tip height, read at most every CHAIN_FRESH seconds; a backend that does
    not answer in CHAIN_TIMEOUT seconds is reported with its error, not waited for."""
    seen = _chain_seen.get(chain)
    if seen is not None and time.monotonic() - seen[0] < CHAIN_FRESH:
        return seen[1]
    height, error = None, ""
    try:
        async with asyncio.timeout(CHAIN_TIMEOUT):
            height = await chain.tip_height()
    except TimeoutError:
        error = f"no answer within {CHAIN_TIMEOUT:g} s"
    except Exception as exc:  # any backend failure is a status to show, not a 500
        error = f"{type(exc).__name__}: {exc}"[:200]
    out = s.ChainStatusOut(network=str(chain.network), backend=str(chain.url),
                           tip_height=height, error=error)
    _chain_seen[chain] = (time.monotonic(), out)
    return out


@routes.post("/node/shutdown", name="shutdown", summary="Stop the node cleanly",
             response=s.Stopping, status=202)
async def shutdown(call: Call) -> Reply:
    """Sets the node's stop event; the answer is sent before the server closes."""
    state = call.state
    state.stopping = True
    state.hub.publish("node.stopping", StoppingEvent(reason="requested through the API"))
    asyncio.get_running_loop().call_soon(state.stop.set)
    return Reply(s.Stopping(), 202)


@routes.get("/peers", name="listPeers", summary="Peers with an open channel",
            query=s.Paging, response=s.Page[s.PeerOut])
async def list_peers(call: Call) -> s.Page[s.PeerOut]:
    peers = [s.PeerOut(peer=p, connected=True) for p in sorted(call.node.host.connected_peers())]
    items, token = page(peers, call.query(s.Paging))
    return s.Page[s.PeerOut](items=items, next_page_token=token)


@routes.get("/peers/{peer_id}", name="getPeer", summary="One peer: addresses and standing",
            response=s.PeerInfo, errors=(502,))
async def get_peer(call: Call) -> s.PeerInfo:
    """Resolves the peer's signed address record in the DHT."""
    node, public = call.node, call.peer()
    peer_id = peer_id_from_public(public)
    info = await node.peers.resolve(public)
    return s.PeerInfo(peer=peer_id, connected=peer_id in node.host.connected_peers(),
                      addrs=list(info.addrs) if info else [],
                      banned=node.messenger.is_banned(public),
                      blocked=node.blocklist.is_blocked_peer(public),
                      misbehaviour=node.messenger.scores[public])


@routes.get("/categories", name="listCategories", summary="The category taxonomy",
            response=list[str])
async def list_categories(call: Call) -> list[str]:
    """Every `top` and `top/sub` path a listing may use."""
    return all_paths()


@routes.get("/openapi.json", name="getOpenapi", summary="This document (OpenAPI 3.1)",
            response=dict[str, Any])
async def get_openapi(call: Call) -> web.Response:
    return web.json_response(call.request.app[OPENAPI])
