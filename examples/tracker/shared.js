// The shared tier behind the request cache, for users and settings (the rows every
// page reads). With REDIS_URL set it is two-level: a small in-process L1 in front of
// Redis, shared by every instance, which tells the others to drop a key when it
// changes. Without it, one in-process memory store. One shared cache serves both
// getters: contextCached puts its group in every key, so they never collide.
import { createSharedCache, memoryStore } from 'context-cache';

/** How long a user or setting may be served from the shared tier, in ms. */
const TTL = 60_000;
/** How stale the in-process L1 of the tiered store may get if an invalidation is lost. */
const L1_TTL = 5_000;
/** How long start-up waits for Redis before serving without it. */
const READY_WAIT = 3_000;

const redisUrl = process.env.REDIS_URL;

/** 'redis' (tiered: memory L1, Redis L2) or 'memory'. */
export const sharedKind = redisUrl ? 'redis' : 'memory';

async function openStore() {
  if (!redisUrl) return memoryStore({ max: 10_000 });
  const { redisStore, tieredStore } = await import('context-cache/redis');
  const tiered = tieredStore({
    l1: memoryStore({ max: 5_000, ttl: L1_TTL }),
    l2: redisStore({ url: redisUrl }),
  });
  // Serve only once this instance hears other instances' invalidations: a message sent
  // before its subscriber listens is lost, and its L1 would be stale until L1_TTL. If
  // Redis is not reachable yet, start anyway (the shared tier fails open to SQL).
  const listening = await Promise.race([
    tiered.ready().then(() => true),
    new Promise((resolve) => setTimeout(resolve, READY_WAIT, false)),
  ]);
  if (!listening) console.error(`Redis at ${redisUrl} not reachable yet: starting without it`);
  return tiered;
}

let down = false;

/** @type {import('context-cache').SharedCache<any>} */
export const shared = createSharedCache({
  store: await openStore(),
  namespace: 'tracker',
  ttl: TTL,
  onError(err, info) {
    down = true;
    console.error(`shared cache unreachable (${info.op} ${info.key}): ${err.message}; reading SQL`);
  },
  onRecover() {
    if (down) console.error('shared cache reachable again');
    down = false;
  },
});
