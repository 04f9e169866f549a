/**
 * Which getter owns which group. Two getters made for one group with two different
 * loaders read each other's values (the group names the cache, not the getter), which
 * is almost always a copy-paste slip: the second one emits `CONTEXT_CACHE_GROUP_REUSED`,
 * once per group. A per-key getter (`contextCached`, `@cached`) and a batched getter
 * (`contextBatched`) of one group are meant to share entries, so each kind is checked
 * against its own kind only.
 */

import { type StackCut, warn } from './warnings.js';

/** Code of the warning for two getters of one group with different loaders. */
export const GROUP_REUSED = 'CONTEXT_CACHE_GROUP_REUSED';

/** What kind of getter claims a group: each kind may own a group once. */
export type GetterKind = 'contextCached' | 'contextBatched';

interface Claim {
  /** The loader of each kind's first getter; weak, so a dropped getter frees its group. */
  contextCached: WeakRef<object> | undefined;
  contextBatched: WeakRef<object> | undefined;
  warned: boolean;
}

/**
 * Groups seen so far. Group names are few and fixed in a normal program; one that makes
 * group names from data would grow this without bound, so past this many the check
 * stops recording new groups (it never affects caching, only the warning).
 */
const MAX_GROUPS = 10_000;

const claims = new Map<string, Claim>();

/**
 * Record that a getter of `kind` with `loader` serves `group`. The same loader again
 * (a getter made twice from one function) is fine; a different one emits
 * `CONTEXT_CACHE_GROUP_REUSED` naming the group, the first time only. `cut` is the
 * public function the user called, where the warning's stack trace starts.
 */
export function claimGroup(kind: GetterKind, group: string, loader: object, cut: StackCut): void {
  let claim = claims.get(group);
  if (claim === undefined) {
    if (claims.size >= MAX_GROUPS) return;
    claim = { contextCached: undefined, contextBatched: undefined, warned: false };
    claims.set(group, claim);
  }
  const owner = claim[kind]?.deref();
  if (owner === undefined) {
    claim[kind] = new WeakRef(loader);
    return;
  }
  if (owner === loader || claim.warned) return;
  claim.warned = true;
  warn(
    `${kind}('${group}') was called again with a different loader. Both getters use the ` +
      `group '${group}', so each returns values the other loaded. Give each getter its ` +
      `own group name, or make the getter once (at module level) and import it where it ` +
      'is needed.',
    GROUP_REUSED,
    cut,
  );
}

/** Forget every claim (tests only). */
export function resetGroups(): void {
  claims.clear();
}
