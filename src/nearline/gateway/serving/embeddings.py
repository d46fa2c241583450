"""``/v1/embeddings``: the bundled MiniLM or an upstream's embedding model, exact-cached.

Models: ``all-MiniLM-L6-v2`` (:data:`BUNDLED`, 384 dimensions, every tenant) runs in
process (ONNX int8, loaded on the first request, on its own thread); a catalogue model
served by an OpenAI-compatible provider is asked at ``{base_url}/embeddings`` under its
``upstream_model`` (the tenant's key must allow the model). Anything else is a 404 naming
what exists.

Every input is cached on its own, per tenant, in the exact tier's store (memory, or Redis
with ``redis.url``; ``cache.exact.ttl_s``; off with ``cache.exact.enabled: false``): the key
hashes tenant, model, provider, upstream model, ``dimensions`` and the input, so a batch
with some inputs seen before only computes the others. An entry keeps its vector and its
token count, so usage is the same for a hit. The bundled model counts tokens with its own
tokenizer and, as sentence-transformers does, embeds the first 256 tokens of a longer
input; for an upstream batch, the upstream's token count is shared between its inputs in
proportion to their length.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from pydantic import Field

from nearline.config import Settings
from nearline.core.errors import InvalidRequest, ModelNotFound, PermissionDenied
from nearline.embed import DEFAULT_MODEL, Embedder, EmbeddingBatcher, load_embedder
from nearline.embed.model import MAX_TOKENS, bundled_tokenizer_file
from nearline.gateway.cache.exact_store import EntryKey, ExactStore
from nearline.gateway.providers.openai_embeddings import UpstreamEmbeddings
from nearline.gateway.serving.catalogue import Catalogue
from nearline.gateway.serving.wire import Wire
from nearline.gateway.tenancy import Tenant

BUNDLED = DEFAULT_MODEL
BUNDLED_DIM = 384
MAX_INPUTS = 2048  # OpenAI's own limit

TokenIds = Annotated[list[int], Field(min_length=1)]
Text = Annotated[str, Field(min_length=1)]


class EmbeddingRequest(Wire):
    model: str = Field(min_length=1)
    input: (
        Annotated[str, Field(min_length=1)]
        | Annotated[
            list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=MAX_INPUTS)
        ]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_INPUTS)]
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    @property
    def inputs(self) -> list[str | list[int]]:
        """One entry per embedding asked for (a token-id list is one input)."""
        raw = self.input
        if isinstance(raw, str):
            return [raw]
        if all(isinstance(x, int) for x in raw):
            return [[x for x in raw if isinstance(x, int)]]  # one list of token ids
        return [x for x in raw if not isinstance(x, int)]  # strings or token-id lists


@dataclass(frozen=True, slots=True)
class Embedded:
    vectors: list[np.ndarray[Any, np.dtype[np.float32]]]
    prompt_tokens: int
    cached: int  # how many inputs came from the cache


def _entry(vector: np.ndarray[Any, np.dtype[np.float32]], tokens: int) -> bytes:
    return struct.pack("<I", tokens) + vector.astype("<f4").tobytes()


def _from_entry(raw: bytes) -> tuple[np.ndarray[Any, np.dtype[np.float32]], int]:
    (tokens,) = struct.unpack_from("<I", raw)
    return np.frombuffer(raw[4:], dtype="<f4").astype(np.float32), tokens


def encode_vector(vector: np.ndarray[Any, np.dtype[np.float32]], encoding: str) -> Any:
    """A float list, or base64 of little-endian float32 (what OpenAI's clients decode)."""
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return [float(x) for x in vector]


class EmbeddingService:
    def __init__(
        self,
        settings: Settings,
        catalogue: Catalogue,
        store: ExactStore | None,
        upstreams: Mapping[str, UpstreamEmbeddings],
    ) -> None:
        self._settings = settings
        self._catalogue = catalogue
        self._store = store
        self._ttl_s = settings.cache.exact.ttl_s
        self._upstreams = dict(upstreams)
        self._batcher: EmbeddingBatcher | None = None
        self._tokenizer: Any = None
        self._loading = asyncio.Lock()

    @property
    def source_names(self) -> list[str]:
        return [BUNDLED, *sorted(n for n in self._catalogue.names if self._upstream_of(n))]

    def _upstream_of(self, model: str) -> UpstreamEmbeddings | None:
        return self._upstreams.get(self._catalogue.route(model).provider)

    async def embed(self, request: EmbeddingRequest, tenant: Tenant) -> Embedded:
        inputs = request.inputs
        if request.model == BUNDLED:
            provider, upstream_model = "bundled", BUNDLED
            if request.dimensions not in (None, BUNDLED_DIM):
                raise InvalidRequest(
                    f"{BUNDLED} has {BUNDLED_DIM} dimensions; dimensions must be that or unset",
                    param="dimensions",
                )
            if any(not isinstance(text, str) for text in inputs):
                raise InvalidRequest(f"{BUNDLED} takes text inputs, not token ids", param="input")
        else:
            provider, upstream_model = self._resolve(request.model, tenant)
        keys = [self._key(tenant, request, provider, upstream_model, x) for x in inputs]
        found: list[tuple[np.ndarray[Any, np.dtype[np.float32]], int] | None] = [None] * len(keys)
        if self._store is not None:
            raws = await asyncio.gather(*(self._store.get(key) for key in keys))
            found = [None if raw is None else _from_entry(raw) for raw in raws]
        missing = [i for i, hit in enumerate(found) if hit is None]
        if missing:
            fresh = await self._compute(
                request, provider, upstream_model, [inputs[i] for i in missing]
            )
            for i, entry in zip(missing, fresh, strict=True):
                found[i] = entry
                if self._store is not None:
                    await self._store.set(keys[i], _entry(*entry), self._ttl_s)
        entries = [entry for entry in found if entry is not None]
        return Embedded(
            [vector for vector, _ in entries],
            sum(tokens for _, tokens in entries),
            cached=len(inputs) - len(missing),
        )

    def _resolve(self, model: str, tenant: Tenant) -> tuple[str, str]:
        names = self._catalogue.names
        upstream = self._upstream_of(model) if model in names else None
        if upstream is None:
            raise ModelNotFound(
                f"the embedding model {model!r} does not exist; available: "
                + ", ".join(
                    n
                    for n in self.source_names
                    if n == BUNDLED or self._catalogue.may_use(tenant, n)
                ),
                param="model",
            )
        if not self._catalogue.may_use(tenant, model):
            raise PermissionDenied(f"this API key may not use the model {model!r}", param="model")
        return upstream.name, self._catalogue.route(model).upstream_model or model

    def _may_use(self, tenant: Tenant, model: str) -> bool:
        return model == BUNDLED or self._catalogue.may_use(tenant, model)

    def _key(
        self, tenant: Tenant, request: EmbeddingRequest, provider: str, upstream: str, value: Any
    ) -> EntryKey:
        canonical = [tenant.name, request.model, provider, upstream, request.dimensions, value]
        digest = hashlib.sha256(orjson.dumps(canonical)).hexdigest()
        return EntryKey(tenant=tenant.name, model=f"embeddings/{request.model}", digest=digest)

    async def _compute(
        self, request: EmbeddingRequest, provider: str, upstream_model: str, inputs: list[Any]
    ) -> list[tuple[np.ndarray[Any, np.dtype[np.float32]], int]]:
        if provider == "bundled":
            batcher, tokenizer = await self._bundled()
            counts = await asyncio.to_thread(
                lambda: [len(e.ids) for e in tokenizer.encode_batch(inputs)]
            )
            vectors = await batcher.embed_many(inputs)
            return [(vectors[i], counts[i]) for i in range(len(inputs))]
        answer = await self._upstreams[provider].embed(inputs, upstream_model, request.dimensions)
        sizes = [max(1, len(orjson.dumps(x))) for x in inputs]
        shares = [answer.prompt_tokens * size // sum(sizes) for size in sizes]
        shares[-1] += answer.prompt_tokens - sum(shares)  # the rounding, on the last
        return [
            (np.asarray(vector, dtype=np.float32), share)
            for vector, share in zip(answer.vectors, shares, strict=True)
        ]

    async def _bundled(self) -> tuple[EmbeddingBatcher, Any]:
        async with self._loading:
            if self._batcher is None:
                self._tokenizer, embedder = await asyncio.to_thread(_load_bundled)
                self._batcher = EmbeddingBatcher(embedder)
            return self._batcher, self._tokenizer

    async def aclose(self) -> None:
        if self._batcher is not None:
            await self._batcher.aclose()
        for upstream in self._upstreams.values():
            await upstream.aclose()


def _load_bundled() -> tuple[Any, Embedder]:
    """The bundled model and its tokenizer (to count tokens), off the event loop."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(bundled_tokenizer_file()))
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    return tokenizer, load_embedder()
