"""Sessions (refresh-token families) and login throttling, in Redis.

Every decision is one Lua script, so it is atomic across replicas: of two
concurrent refreshes with one token exactly one rotates it; the other sees a
used token. Times come from the Redis server clock (TIME), so replicas with
drifting clocks agree.

A family is one login. Its keys share the hash tag `{<family id>}`:
- `auth:rtf:{f}`: hash user_id, created (unix s), revoked ("0"/"1"), current
  (SHA-256 of the one refresh token that may be used now);
- `auth:rtu:{f}`: set of the used tokens' digests (128-bit prefixes), kept
  as long as the family so that any replay of an old token is recognised.
Both expire after the idle TTL (renewed by each refresh), never beyond the
family's maximum lifetime.

Login throttling: a sorted set per email (`auth:login:<sha256(email)>`) of
attempts in the window. An attempt is recorded *before* the password check
and removed again only if it succeeded, so concurrent guesses cannot exceed
the limit either.
"""

from __future__ import annotations

import enum
import hashlib
import math
import secrets
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from auth_svc.tokens import RefreshToken, new_family_id, new_refresh_token

USED_DIGEST_CHARS = 32  # 128 bits identify a used token well enough


class Outcome(enum.Enum):
    OK = "ok"
    INVALID = "invalid"  # unknown, expired, or not the caller's
    REVOKED = "revoked"  # the family was revoked (logout or theft detection)
    REUSED = "reused"  # an already used token: the family is now revoked


def _family_key(family_id: str) -> str:
    return f"auth:rtf:{{{family_id}}}"


def _used_key(family_id: str) -> str:
    return f"auth:rtu:{{{family_id}}}"


# KEYS: family, used. ARGV: user_id, digest, idle ttl, max lifetime.
_START = """
local now = tonumber(redis.call('TIME')[1])
redis.call('HSET', KEYS[1], 'user_id', ARGV[1], 'created', now, 'revoked', '0', 'current', ARGV[2])
redis.call('EXPIRE', KEYS[1], math.min(tonumber(ARGV[3]), tonumber(ARGV[4])))
return 'ok'
"""

# KEYS: family, used. ARGV: presented digest, new digest, idle ttl, max lifetime, used-digest length.
# The same call run again (its reply was lost and the Redis client sent it once more, paymesh_runtime.redis)
# finds its own successor current and answers as the first run did: only the request that made the
# successor knows its digest, so this is no replay of the used token, and nothing changes.
_ROTATE = """
local fam = redis.call('HMGET', KEYS[1], 'user_id', 'created', 'revoked', 'current')
if not fam[1] then return {'invalid'} end
local presented = ARGV[1]
if fam[4] ~= presented then
  if redis.call('SISMEMBER', KEYS[2], string.sub(presented, 1, tonumber(ARGV[5]))) == 0 then
    return {'invalid'}
  end
  if fam[4] == ARGV[2] then
    if fam[3] == '1' then return {'revoked'} end
    return {'ok', fam[1]}
  end
  redis.call('HSET', KEYS[1], 'revoked', '1')
  return {'reused'}
end
if fam[3] == '1' then return {'revoked'} end
local now = tonumber(redis.call('TIME')[1])
local left = tonumber(fam[2]) + tonumber(ARGV[4]) - now
if left <= 0 then return {'invalid'} end
local ttl = math.min(tonumber(ARGV[3]), left)
redis.call('SADD', KEYS[2], string.sub(presented, 1, tonumber(ARGV[5])))
redis.call('HSET', KEYS[1], 'current', ARGV[2])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return {'ok', fam[1]}
"""

# KEYS: family, used. ARGV: presented digest, caller user id, used-digest length.
_REVOKE = """
local fam = redis.call('HMGET', KEYS[1], 'user_id', 'current')
if not fam[1] or fam[1] ~= ARGV[2] then return 'invalid' end
if fam[2] ~= ARGV[1] and redis.call('SISMEMBER', KEYS[2], string.sub(ARGV[1], 1, tonumber(ARGV[3]))) == 0 then
  return 'invalid'
end
redis.call('HSET', KEYS[1], 'revoked', '1')
return 'ok'
"""

# KEYS: attempts. ARGV: window ms, max attempts, attempt id. Returns 0 or ms to wait. The same call run
# again finds its attempt recorded and lets it go ahead, as the first run did.
_RESERVE_ATTEMPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then return 0 end
local count = redis.call('ZCARD', KEYS[1])
if count >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 0
"""


@dataclass(frozen=True)
class Rotation:
    outcome: Outcome
    user_id: str | None = None
    token: RefreshToken | None = None


class Sessions:
    """Refresh-token families: start at login, rotate on refresh, revoke on logout or reuse."""

    def __init__(self, redis: Redis, *, idle_ttl_seconds: int, max_lifetime_seconds: int) -> None:
        self._redis = redis
        self._idle = idle_ttl_seconds
        self._max = max_lifetime_seconds
        self._start: Any = redis.register_script(_START)
        self._rotate: Any = redis.register_script(_ROTATE)
        self._revoke: Any = redis.register_script(_REVOKE)

    async def start(self, user_id: str) -> RefreshToken:
        token = new_refresh_token(new_family_id())
        keys = [_family_key(token.family_id), _used_key(token.family_id)]
        await self._start(keys=keys, args=[user_id, token.digest, self._idle, self._max])
        return token

    async def rotate(self, presented: RefreshToken) -> Rotation:
        """Uses up `presented` and issues its successor in the same family."""
        successor = new_refresh_token(presented.family_id)
        keys = [_family_key(presented.family_id), _used_key(presented.family_id)]
        args = [presented.digest, successor.digest, self._idle, self._max, USED_DIGEST_CHARS]
        reply = [_text(part) for part in await self._rotate(keys=keys, args=args)]
        outcome = Outcome(reply[0])
        if outcome is not Outcome.OK:
            return Rotation(outcome)
        return Rotation(outcome, reply[1], successor)

    async def revoke(self, presented: RefreshToken, user_id: str) -> Outcome:
        """Revokes the family of `presented` if it is one of `user_id`'s."""
        keys = [_family_key(presented.family_id), _used_key(presented.family_id)]
        reply = await self._revoke(keys=keys, args=[presented.digest, user_id, USED_DIGEST_CHARS])
        return Outcome(_text(reply))


class LoginThrottle:
    """At most `max_failures` failed (or in-flight) logins per email per window."""

    def __init__(self, redis: Redis, *, max_failures: int, window_seconds: int) -> None:
        self._redis = redis
        self._max = max_failures
        self._window_ms = window_seconds * 1000
        self._reserve: Any = redis.register_script(_RESERVE_ATTEMPT)

    async def reserve(self, email: str) -> tuple[str | None, int]:
        """(attempt id, 0) when the attempt may go ahead; (None, seconds to wait) when throttled."""
        attempt = secrets.token_hex(8)
        wait_ms = int(await self._reserve(keys=[_attempts_key(email)], args=[self._window_ms, self._max, attempt]))
        if wait_ms:
            return None, math.ceil(wait_ms / 1000)
        return attempt, 0

    async def succeeded(self, email: str, attempt: str) -> None:
        """A correct password does not count against the limit."""
        await self._redis.zrem(_attempts_key(email), attempt)


def _attempts_key(email: str) -> str:
    # Hashed: Redis keys (and a MONITOR) never show the email itself.
    return "auth:login:" + hashlib.sha256(email.encode()).hexdigest()


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
