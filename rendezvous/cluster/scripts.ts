/**
 * Lua scripts: each runs atomically in Redis, so two nodes racing for a name,
 * or a refresh racing a takeover, can never leave a half-written registry.
 * Records are compared as exact strings (they carry a per-registration `reg`).
 */

/**
 * Claim a name. KEYS[1] name key; ARGV: record, Ed25519 key (base64), TTL ms.
 * Free, unreadable, or held by the same key: take it, return {1, previous?}.
 * Held by another key: return {0, current}.
 */
export const CLAIM = `
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, rec = pcall(cjson.decode, cur)
  if ok and type(rec) == 'table' and rec.key ~= ARGV[2] then return {0, cur} end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
if cur then return {1, cur} end
return {1}
`;

/**
 * Compare-and-refresh every name a node holds. KEYS: name keys; ARGV[1] TTL ms,
 * ARGV[1+i] the record we wrote for KEYS[i]. Ours: extend. Missing (expired
 * while Redis was out of reach, or Redis restarted empty): write it back, we
 * still hold the serve connection. Someone else's: leave it, report {i, current}.
 */
export const REFRESH = `
local lost = {}
for i, k in ipairs(KEYS) do
  local cur = redis.call('GET', k)
  if cur == ARGV[i + 1] then
    redis.call('PEXPIRE', k, ARGV[1])
  elseif not cur then
    redis.call('SET', k, ARGV[i + 1], 'PX', ARGV[1])
  else
    lost[#lost + 1] = i
    lost[#lost + 1] = cur
  end
end
return lost
`;

/** Compare-and-delete. KEYS[1] name key; ARGV[1] our record. Returns 1 when deleted. */
export const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/**
 * Node heartbeat. KEYS[1] node key; ARGV: record, TTL ms.
 * Returns what was there before (to spot a duplicate --node-id).
 */
export const HEARTBEAT = `
local cur = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return cur
`;
