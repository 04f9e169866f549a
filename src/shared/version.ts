/**
 * The version a stored value carries: the time its load started, in microseconds since
 * the epoch. It travels in a small header in front of the serializer's bytes, so a store
 * (or a Redis script) can compare two values without decoding either, and the payload
 * stays opaque: any serializer works.
 *
 * Header: `cc1:` + the version as 16 decimal digits + `:` (21 bytes, ASCII). A value
 * without it (written before versions existed, or by someone else) is older than any
 * versioned value, and reads as a miss.
 *
 * A delete leaves a tombstone: the header alone, ending in `!` instead of `:`, whose
 * version is the time of the delete. It reads as a miss, and like any value it refuses a
 * write whose load started earlier, so a load that read the old row before another
 * instance's delete cannot store it afterwards.
 */

import type { StoreValue } from './types.js';

/** The header's fixed start. A value from before versions (a JSON envelope) starts with `{`. */
export const VERSION_MAGIC = 'cc1:';
/** Bytes of the whole header: magic, 16 digits, `:`. */
export const HEADER_BYTES = 21;
const DIGITS = 16;
/** Char codes of the magic, compared byte by byte on Buffers without decoding them. */
const MAGIC_CODES = [...VERSION_MAGIC].map((c) => c.charCodeAt(0));
const COLON = 0x3a;
/** The last byte of a tombstone's header, where a value's header has `:`. */
const TOMBSTONE_END = '!';
const BANG = 0x21;

let last = 0;

/**
 * A fresh version: the wall clock in microseconds, strictly increasing within this
 * process (two writes in the same millisecond are still ordered). The wall clock, not
 * a monotonic one, since versions are compared across instances.
 */
export function nextVersion(): number {
  const now = Date.now() * 1000;
  last = now > last ? now : last + 1;
  return last;
}

function header(version: number): string {
  return `${VERSION_MAGIC}${String(version).padStart(DIGITS, '0')}:`;
}

/**
 * `payload` with the header of `version` in front. Bytes stay a `Buffer` where the
 * runtime has one (Node, Bun, Deno, Workers with `nodejs_compat`), else a `Uint8Array`.
 */
export function frame(version: number, payload: StoreValue): StoreValue {
  if (typeof payload === 'string') return header(version) + payload;
  const head = header(version);
  if (typeof Buffer === 'function') return Buffer.concat([Buffer.from(head, 'latin1'), payload]);
  const framed = new Uint8Array(head.length + payload.length);
  for (let i = 0; i < head.length; i++) framed[i] = head.charCodeAt(i);
  framed.set(payload, head.length);
  return framed as StoreValue;
}

/** The tombstone a delete made at `version` leaves: a header with no payload. */
export function tombstone(version: number): string {
  return `${VERSION_MAGIC}${String(version).padStart(DIGITS, '0')}${TOMBSTONE_END}`;
}

/** The last byte of the header, as a char code, or -1 when `raw` has no header. */
function headerEnd(raw: StoreValue): number {
  if (raw.length < HEADER_BYTES) return -1;
  if (typeof raw === 'string') {
    return raw.startsWith(VERSION_MAGIC) ? raw.charCodeAt(HEADER_BYTES - 1) : -1;
  }
  for (let i = 0; i < MAGIC_CODES.length; i++) if (raw[i] !== MAGIC_CODES[i]) return -1;
  return raw[HEADER_BYTES - 1] as number;
}

/** Whether `raw` is a delete's tombstone (a miss that still carries a version). */
export function isTombstone(raw: StoreValue): boolean {
  return headerEnd(raw) === BANG;
}

/**
 * The serializer's bytes inside a stored value, or `undefined` when it has no header
 * (or is a tombstone).
 */
export function payloadOf(raw: StoreValue): StoreValue | undefined {
  if (headerEnd(raw) !== COLON) return undefined;
  return typeof raw === 'string' ? raw.slice(HEADER_BYTES) : raw.subarray(HEADER_BYTES);
}

/**
 * The version of a stored value or tombstone, or `undefined` when it has none (it is
 * older than any).
 */
export function versionOf(raw: StoreValue): number | undefined {
  const end = headerEnd(raw);
  if (end !== COLON && end !== BANG) return undefined;
  const digits =
    typeof raw === 'string'
      ? raw.slice(VERSION_MAGIC.length, HEADER_BYTES - 1)
      : String.fromCharCode(...raw.subarray(VERSION_MAGIC.length, HEADER_BYTES - 1));
  const version = Number(digits);
  return Number.isSafeInteger(version) ? version : undefined;
}

/**
 * Whether a value of `version` may replace `current`: when there is nothing, or what is
 * there started its load earlier (a value without a version counts as the oldest).
 */
export function isNewer(version: number, current: StoreValue | undefined): boolean {
  if (current === undefined) return true;
  const held = versionOf(current);
  return held === undefined || held < version;
}

/**
 * The same rule in Redis, in one script so nothing lands between the compare and the
 * set. KEYS[1]: the entry; ARGV: value (or tombstone), ttl in ms, version. Only the
 * header is read (GETRANGE), never the payload. Returns 1 when written, 0 when a newer
 * value or tombstone is kept.
 */
export const SET_IF_NEWER_SCRIPT = `local head = redis.call('GETRANGE', KEYS[1], 0, ${HEADER_BYTES - 1})
local last = string.sub(head, ${HEADER_BYTES}, ${HEADER_BYTES})
if string.sub(head, 1, ${VERSION_MAGIC.length}) == '${VERSION_MAGIC}' and (last == ':' or last == '${TOMBSTONE_END}') then
  local held = tonumber(string.sub(head, ${VERSION_MAGIC.length + 1}, ${HEADER_BYTES - 1}))
  if held ~= nil and held >= tonumber(ARGV[3]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`;
