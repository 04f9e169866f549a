/**
 * The few things the root entry needs from its runtime beyond the language and
 * `AsyncLocalStorage`, each used where the runtime has it and replaced where it does
 * not. Node 20+, Bun and Deno have Node's timers and `Buffer`; Cloudflare Workers
 * (`nodejs_compat`) has `Buffer` but timers that are plain numbers with no `unref()`.
 * Nothing here touches a global at import time.
 */

type DenoTimers = { readonly unrefTimer?: (id: number) => void };

/**
 * Let `timer` not keep the process alive: Node's and Bun's timer objects have `unref()`,
 * Deno's numeric ids go to `Deno.unrefTimer`. Returns `false` where the runtime has no
 * such thing (Workers, where an isolate's life is not the program's to decide).
 */
export function unrefTimer(timer: unknown): boolean {
  if (typeof timer === 'object' && timer !== null) {
    const unref = (timer as { unref?: unknown }).unref;
    if (typeof unref === 'function') {
      unref.call(timer);
      return true;
    }
    return false;
  }
  const deno = (globalThis as { Deno?: DenoTimers }).Deno;
  if (typeof timer === 'number' && typeof deno?.unrefTimer === 'function') {
    deno.unrefTimer(timer);
    return true;
  }
  return false;
}

/**
 * Run `fn` once the runtime has handled pending I/O: `setImmediate` where it exists
 * (after the poll phase of Node's loop), else a zero-delay timer.
 */
export function afterIo(fn: () => void): void {
  if (typeof setImmediate === 'function') setImmediate(fn);
  else setTimeout(fn, 0);
}

let encoder: InstanceType<typeof TextEncoder> | undefined;

/** The UTF-8 size of `text` in bytes, without `Buffer` where the runtime lacks it. */
export function utf8Length(text: string): number {
  if (typeof Buffer === 'function') return Buffer.byteLength(text, 'utf8');
  encoder ??= new TextEncoder();
  return encoder.encode(text).byteLength;
}

let decoder: InstanceType<typeof TextDecoder> | undefined;

/** `bytes` read as UTF-8 text (a Node `Buffer` is a `Uint8Array` too). */
export function utf8Text(bytes: Uint8Array): string {
  decoder ??= new TextDecoder();
  return decoder.decode(bytes);
}
