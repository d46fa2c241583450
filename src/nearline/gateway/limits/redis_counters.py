"""Limit counters in Redis, shared by every replica (``redis.url``).

Admission is one Lua script (``ACQUIRE``): it reads every subject's request and token
windows (hashes of one-second buckets, by Redis' own clock) and budget spend, refuses or
counts the request in each, atomically, in one round trip. Tokens, give-backs and spend are
buffered and sent together every ``limits.flush_interval_s`` (one pipeline), so counting a
streamed answer never waits on Redis; what is buffered is sent at shutdown too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from nearline.gateway.limits.window import WINDOW_S, Decision, Refusal, Standing, Subject
from nearline.gateway.limits.window import period_label as _label

log = logging.getLogger(__name__)

ACQUIRE = """
local window = tonumber(ARGV[1])
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now_ms = sec * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[2])
local function scan(key)
  local flat = redis.call('HGETALL', key)
  local used, buckets, stale = 0, {}, {}
  for i = 1, #flat, 2 do
    local b, c = tonumber(flat[i]), tonumber(flat[i + 1])
    if b <= sec - window then stale[#stale + 1] = flat[i]
    else used = used + c; buckets[#buckets + 1] = {b, c} end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  table.sort(buckets, function(x, y) return x[1] < y[1] end)
  return used, buckets
end
local function wait_ms(buckets, used, limit)
  local freed = 0
  for _, bc in ipairs(buckets) do
    freed = freed + bc[2]
    if used - freed + 1 <= limit then return math.max(0, (bc[1] + window) * 1000 - now_ms) end
  end
  return window * 1000
end
local function reset_ms(buckets)
  if #buckets == 0 then return 0 end
  return math.max(0, (buckets[1][1] + window) * 1000 - now_ms)
end
local out = {0, 0, sec, 0}
local rows = {}
for i = 0, n - 1 do
  local rk, tk, sk = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local rpm, tpm = tonumber(ARGV[3 * i + 3]), tonumber(ARGV[3 * i + 4])
  local budget = tonumber(ARGV[3 * i + 5])
  local ru, rb, tu, tb = 0, {}, 0, {}
  if rpm > 0 then ru, rb = scan(rk) end
  if tpm > 0 then tu, tb = scan(tk) end
  local spent = '0'
  if budget >= 0 then spent = redis.call('GET', sk) or '0' end
  if out[1] == 0 then
    if budget >= 0 and tonumber(spent) >= budget then out[1] = 3
    elseif rpm > 0 and ru + 1 > rpm then out[1] = 1; out[2] = wait_ms(rb, ru, rpm)
    elseif tpm > 0 and tu >= tpm then out[1] = 2; out[2] = wait_ms(tb, tu, tpm) end
    if out[1] ~= 0 then out[4] = i end
  end
  rows[#rows + 1] = {rk, rpm, ru, rb, tu, tb, spent}
end
for _, r in ipairs(rows) do
  local ru, rr = r[3], reset_ms(r[4])
  if out[1] == 0 and r[2] > 0 then
    redis.call('HINCRBY', r[1], sec, 1)
    redis.call('EXPIRE', r[1], window + 5)
    ru = ru + 1
    if rr == 0 then rr = window * 1000 end
  end
  out[#out + 1] = ru; out[#out + 1] = rr
  out[#out + 1] = r[5]; out[#out + 1] = reset_ms(r[6]); out[#out + 1] = r[7]
end
return out
"""

ADD_TOKENS = """
local sec = tonumber(redis.call('TIME')[1])
for i, key in ipairs(KEYS) do
  redis.call('HINCRBY', key, sec, tonumber(ARGV[i]))
  redis.call('EXPIRE', key, tonumber(ARGV[#KEYS + 1]))
end
return #KEYS
"""

_REFUSALS: dict[int, Refusal] = {1: "requests", 2: "tokens", 3: "budget"}
_SPEND_TTL_S = {"day": 2 * 86_400, "month": 32 * 86_400}


class RedisCounters:
    def __init__(
        self, client: aioredis.Redis, *, prefix: str = "nearline:limits:", flush_s: float = 0.1
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._flush_s = flush_s
        self._acquire = client.register_script(ACQUIRE)
        self._add_tokens = client.register_script(ADD_TOKENS)
        self._tokens: defaultdict[str, int] = defaultdict(int)
        self._backs: defaultdict[tuple[str, int], int] = defaultdict(int)
        self._spend: defaultdict[tuple[str, int], float] = defaultdict(float)
        self._flusher: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    def _keys(self, subject: Subject) -> tuple[str, str, str]:
        base = f"{self._prefix}{subject.name}"
        label = _label(subject.limits.budget_period)
        return f"{base}:rq", f"{base}:tk", f"{base}:spend:{label}"

    async def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_forever(), name="nearline-limits-flush")

    async def acquire(self, subjects: Sequence[Subject]) -> Decision:
        keys: list[str] = []
        args: list[float | int] = [WINDOW_S, len(subjects)]
        for subject in subjects:
            keys.extend(self._keys(subject))
            limits = subject.limits
            budget = -1.0 if limits.budget_usd is None else limits.budget_usd
            args.extend([limits.rpm or 0, limits.tpm or 0, budget])
        try:  # evalsha directly: the hot path skips redis-py's Script wrapper
            out = await self._client.evalsha(self._acquire.sha, len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted or flushed its scripts: load it again
            out = await self._acquire(keys=keys, args=args)
        refused = _REFUSALS.get(int(out[0]))
        standing = tuple(
            Standing(int(r), int(rr), int(t), int(tr), float(spent))
            for r, rr, t, tr, spent in zip(*[iter(out[4:])] * 5, strict=True)
        )
        return Decision(
            refused,
            int(out[1]),
            int(out[2]),
            standing,
            subjects[int(out[3])] if refused is not None else None,
        )

    def add_tokens(self, subjects: Sequence[Subject], tokens: int) -> None:
        for subject in subjects:
            if subject.limits.tpm is not None:
                self._tokens[self._keys(subject)[1]] += tokens

    def give_back(self, subjects: Sequence[Subject], bucket: int) -> None:
        for subject in subjects:
            if subject.limits.rpm is not None:
                self._backs[(self._keys(subject)[0], bucket)] += 1

    def add_spend(self, subjects: Sequence[Subject], usd: float) -> None:
        for subject in subjects:
            if subject.limits.budget_usd is not None:
                ttl = _SPEND_TTL_S[subject.limits.budget_period]
                self._spend[(self._keys(subject)[2], ttl)] += usd

    async def flush(self) -> None:
        tokens, self._tokens = self._tokens, defaultdict(int)
        backs, self._backs = self._backs, defaultdict(int)
        spend, self._spend = self._spend, defaultdict(float)
        if not (tokens or backs or spend):
            return
        pipe = self._client.pipeline(transaction=False)
        if tokens:
            await self._add_tokens(
                keys=list(tokens), args=[*tokens.values(), WINDOW_S + 5], client=pipe
            )
        for (key, bucket), count in backs.items():
            _ = pipe.hincrby(key, str(bucket), -count)
        for (key, ttl), usd in spend.items():
            _ = pipe.incrbyfloat(key, usd)
            _ = pipe.expire(key, ttl)
        try:
            await pipe.execute()
        except RedisError as exc:
            log.warning("limits: counts not sent to Redis (%d subjects): %s", len(tokens), exc)

    async def _flush_forever(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_s):
                    await self._closing.wait()
            await self.flush()  # after closing too: what is left goes out

    async def aclose(self) -> None:
        # stopped by an event, never cancelled: a flush cancelled inside its Redis round trip
        # could leave the connection unread, and the last flush then waited forever (CI)
        self._closing.set()
        if self._flusher is not None:
            await self._flusher
            self._flusher = None
        else:
            with contextlib.suppress(RedisError):
                await self.flush()
