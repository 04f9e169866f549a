/**
 * Cache keys. Primitive keys are used as they are (a `Map` already compares them by
 * value: `1` ≠ `'1'`, `1n` ≠ `1`, `NaN` = `NaN`), so a hit builds no string. Arrays of
 * primitives are composite keys, encoded into a string that no other array encodes to;
 * the request cache keeps them in a map of their own, so they never meet string keys.
 */

import { callerLabel, describe, type StackCut } from './warnings.js';

/** A primitive that can be (part of) a cache key. */
export type KeyPart = string | number | bigint | boolean | null | undefined;

/**
 * What identifies a cached value inside its group: a primitive, or an array of
 * primitives compared element by element (`[repoId, userId]`).
 */
export type CacheKey = KeyPart | readonly KeyPart[];

/**
 * The text of the type error for a key that is not a `CacheKey` (a `Date`, an object):
 * what `CheckedKey` turns such a key's parameter type into, so the compiler's message
 * names the fix.
 */
export type CacheKeyError =
  'CacheKey must be a string, number, bigint, boolean, null, undefined or an array of them: pass date.getTime() or an id';

/**
 * `K` itself when it is a `CacheKey`, else `CacheKeyError`: a key parameter typed
 * `CheckedKey<K>` accepts every cache key and rejects anything else with a message that
 * says what to pass instead.
 */
export type CheckedKey<K> = [K] extends [CacheKey] ? K : CacheKeyError;

/** What a key parameter infers from before it is checked: anything but a function or symbol. */
export type KeyCandidate = KeyPart | object;

const KEY_TYPES = 'a string, number, bigint, boolean, null, undefined or an array of those';

/** The TypeError for a key that is not a `CacheKey`. */
export function keyError(fn: string, key: unknown, cut?: StackCut): TypeError {
  return new TypeError(
    `${callerLabel(fn, cut)}: key must be ${KEY_TYPES}, got ${describe(key)}. ` +
      'Pass the id (user.id) or a composite key ([repo.id, user.id]) instead.',
  );
}

function partError(fn: string, index: number, part: unknown, cut?: StackCut): TypeError {
  return new TypeError(
    `${callerLabel(fn, cut)}: key[${index}] must be a string, number, bigint, boolean, null or undefined, ` +
      `got ${describe(part)}. A composite key holds primitives only, such as [repo.id, user.id].`,
  );
}

/** Throw unless `group` is a non-empty string. */
export function checkGroup(fn: string, group: unknown): asserts group is string {
  if (typeof group !== 'string' || group.length === 0) {
    throw new TypeError(
      `${fn}(): group must be a non-empty string naming what is cached, such as 'user', ` +
        `got ${describe(group)}.`,
    );
  }
}

/** Throw unless `loader` is a function. */
export function checkLoader(fn: string, loader: unknown): void {
  if (typeof loader !== 'function') {
    throw new TypeError(
      `${fn}(): loader must be a function that loads the value for a key, such as ` +
        `(id) => db.users.find(id), got ${describe(loader)}.`,
    );
  }
}

/** Encode one primitive so that the encodings of different values never collide. */
function encodePart(fn: string, index: number, part: unknown, cut?: StackCut): string {
  switch (typeof part) {
    case 'string':
      return `s${part.length}:${part}`;
    case 'number':
      // String() gives '0' for -0, matching the Map's SameValueZero, and 'NaN' for NaN.
      return `n${part};`;
    case 'bigint':
      return `b${part};`;
    case 'boolean':
      return part ? 't' : 'f';
    case 'undefined':
      return 'u';
    case 'object':
      if (part === null) return 'z';
  }
  throw index < 0 ? keyError(fn, part, cut) : partError(fn, index, part, cut);
}

function isKeyPart(value: unknown): boolean {
  const type = typeof value;
  return value === null || (type !== 'object' && type !== 'function' && type !== 'symbol');
}

/** Throw a `TypeError` unless `key` is a `CacheKey`. Builds nothing. */
export function checkKey(fn: string, key: unknown, cut?: StackCut): void {
  if (!Array.isArray(key)) {
    if (!isKeyPart(key)) throw keyError(fn, key, cut);
    return;
  }
  for (let i = 0; i < key.length; i++) {
    if (!isKeyPart(key[i])) throw partError(fn, i, key[i], cut);
  }
}

/**
 * The key to use in a request-cache map: a primitive as it is (a `Map` compares it by
 * value), a composite key encoded. Throws a `TypeError` for anything else.
 */
export function mapKeyOf(fn: string, key: unknown, cut?: StackCut): unknown {
  if (typeof key === 'object' && key !== null) {
    if (!Array.isArray(key)) throw keyError(fn, key, cut);
    return encodeComposite(fn, key, cut);
  }
  if (typeof key === 'function' || typeof key === 'symbol') throw keyError(fn, key, cut);
  return key;
}

/** Encode a composite key (the array's elements, each self-delimiting). */
export function encodeComposite(fn: string, key: readonly unknown[], cut?: StackCut): string {
  let out = '';
  for (let i = 0; i < key.length; i++) out += encodePart(fn, i, key[i], cut);
  return out;
}

/**
 * Encode any key into one string, distinct for every distinct key, primitive or
 * composite (used where keys must become strings, as in a shared store).
 */
export function encodeKey(fn: string, key: unknown): string {
  if (Array.isArray(key)) return `a${key.length}:${encodeComposite(fn, key)}`;
  return encodePart(fn, -1, key);
}
