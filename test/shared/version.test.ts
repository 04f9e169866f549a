/**
 * The version header of stored values: what a store (or the Redis script) compares
 * without decoding the serializer's bytes.
 */

import { describe, expect, it } from 'vitest';
import {
  frame,
  isNewer,
  isTombstone,
  nextVersion,
  payloadOf,
  tombstone,
  versionOf,
} from '../../src/shared/version.js';

describe('versions', () => {
  it('are the wall clock in microseconds, strictly increasing within the process', () => {
    const before = Date.now() * 1000;
    const seen = Array.from({ length: 10_000 }, () => nextVersion());
    for (let i = 1; i < seen.length; i++) expect(seen[i]!).toBeGreaterThan(seen[i - 1]!);
    expect(seen[0]!).toBeGreaterThanOrEqual(before);
    expect(String(seen[0]).length).toBe(16);
  });

  it('travel in a 21-byte ASCII header in front of string and Buffer payloads alike', () => {
    const version = 1_765_000_000_123_456;
    const text = frame(version, '{"cc":1,"v":1}');
    expect(text).toBe('cc1:1765000000123456:{"cc":1,"v":1}');
    const bytes = frame(version, Buffer.from([0x82, 0xa2, 0x00, 0xff]));
    expect(Buffer.isBuffer(bytes)).toBe(true);
    expect((bytes as Buffer).subarray(0, 21).toString('latin1')).toBe('cc1:1765000000123456:');
    expect(versionOf(text)).toBe(version);
    expect(versionOf(bytes)).toBe(version);
    expect(payloadOf(text)).toBe('{"cc":1,"v":1}');
    expect([...(payloadOf(bytes) as Buffer)]).toEqual([0x82, 0xa2, 0x00, 0xff]);
  });

  it('a value without the header has no version and no payload: older than any, a miss', () => {
    for (const raw of ['{"cc":1,"v":"old format"}', 'cc1:12', Buffer.from('{"cc":1}'), '']) {
      expect(versionOf(raw)).toBeUndefined();
      expect(payloadOf(raw)).toBeUndefined();
      expect(isNewer(1, raw)).toBe(true);
    }
  });

  it("a delete's tombstone is the header alone, ending in '!': a version and no payload", () => {
    const version = 1_765_000_000_123_456;
    const dead = tombstone(version);
    expect(dead).toBe('cc1:1765000000123456!');
    expect(isTombstone(dead)).toBe(true);
    expect(isTombstone(Buffer.from(dead, 'latin1'))).toBe(true);
    expect(versionOf(dead)).toBe(version);
    expect(versionOf(Buffer.from(dead, 'latin1'))).toBe(version);
    expect(payloadOf(dead)).toBeUndefined();
    // It refuses a write whose load started before the delete, and takes a later one.
    expect(isNewer(version - 1, dead)).toBe(false);
    expect(isNewer(version + 1, dead)).toBe(true);
    // A value and anything without the header are not tombstones.
    for (const raw of [frame(version, 'x'), frame(version, ''), '{"cc":1}', '']) {
      expect(isTombstone(raw)).toBe(false);
    }
  });

  it('a write is newer only over nothing or a smaller version', () => {
    const held = frame(100, 'x');
    expect(isNewer(101, held)).toBe(true);
    expect(isNewer(100, held)).toBe(false);
    expect(isNewer(99, held)).toBe(false);
    expect(isNewer(1, undefined)).toBe(true);
  });
});
