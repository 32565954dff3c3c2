"""The state of the app: typed keys and the NATS handles, set in `create_app` before the app is frozen.

The `Backbone` object is stored once; the lifecycle (`edge_api.app.backbone_lifecycle`) fills in and clears
its fields. Bucket handles are bound on first use, so the edge API starts (and answers /ready with 503)
before the agents have created the topology.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import nats.js.errors
from aiohttp import web
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from bus.uploads import UploadBuckets

from bus.conversations import ConversationStore
from bus.generations import GenerationStore
from bus.progress import ProgressStore
from contracts.topology import CONVERSATIONS_BUCKET, PROGRESS_BUCKET, IndexGeneration
from edge_api.errors import NotConnected
from edge_api.settings import EdgeSettings


@dataclass
class Backbone:
    """NATS handles of the edge API, for the lifetime of the app."""

    settings: EdgeSettings
    nc: NATS | None = None
    js: JetStreamContext | None = None
    _kv: KeyValue | None = None
    _uploads: UploadBuckets | None = None
    _generations: GenerationStore | None = None
    _conversations: ConversationStore | None = None
    _outage: asyncio.Future[None] | None = None

    def outage(self) -> asyncio.Future[None]:
        """A future done when the current NATS connection is lost. A request that waits for an answer takes it
        when it publishes and gives up when it is done (`errors.BackboneLost`): the answer comes on core NATS,
        and what is published while the edge API is disconnected never reaches it."""
        if self._outage is None or self._outage.done():
            self._outage = asyncio.get_running_loop().create_future()
        return self._outage

    def connection_lost(self) -> None:
        """The connection's `on_disconnect` hook: ends the wait of every request that took `outage()`."""
        if self._outage is not None and not self._outage.done():
            self._outage.set_result(None)
        self._outage = None

    @property
    def is_connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    @property
    def generation(self) -> IndexGeneration:
        """The configured generation: what serves until the `mmrag-index` bucket records one."""
        return IndexGeneration(self.settings.index_generation)

    async def generations(self) -> GenerationStore:
        js = self.jetstream()
        if self._generations is None:
            self._generations = await GenerationStore.open(js)
        return self._generations

    async def serving_generation(self) -> IndexGeneration:
        """The generation document status is served from: the `serving` record (a re-index moves it), else
        the configured one (the agents have not bootstrapped the record yet)."""
        try:
            serving = await (await self.generations()).serving()
        except nats.js.errors.NotFoundError:  # no bucket yet: agents not started
            return self.generation
        return IndexGeneration(serving.generation) if serving is not None else self.generation

    def jetstream(self) -> JetStreamContext:
        """JetStream, or `NotConnected` (-> 503 at once) while NATS is unreachable."""
        if not self.is_connected or self.js is None:
            raise NotConnected
        return self.js

    async def progress_kv(self) -> KeyValue:
        js = self.jetstream()
        if self._kv is None:
            self._kv = await js.key_value(PROGRESS_BUCKET)
        return self._kv

    async def progress(self) -> ProgressStore:
        return ProgressStore(await self.progress_kv(), await self.serving_generation())

    async def conversations(self) -> ConversationStore:
        js = self.jetstream()
        if self._conversations is None:
            self._conversations = ConversationStore(
                await js.key_value(CONVERSATIONS_BUCKET), max_turns=self.settings.conversation_max_turns,
                max_per_owner=self.settings.conversations_per_key,
            )  # fmt: skip
        return self._conversations

    async def uploads(self, tenant: str, *, create: bool = False) -> ObjectStore:
        """`tenant`'s uploads bucket (`bus.uploads`). Without `create`, a tenant that never uploaded anything has
        none: `nats.js.errors.NotFoundError` (its objects are not found). `create`: made on the tenant's first
        upload."""
        js = self.jetstream()
        if self._uploads is None:
            self._uploads = UploadBuckets(js)
        return await (self._uploads.ensure(tenant) if create else self._uploads.store(tenant))


SETTINGS = web.AppKey("settings", EdgeSettings)
BACKBONE = web.AppKey("backbone", Backbone)


def backbone(request: web.Request) -> Backbone:
    return request.app[BACKBONE]
