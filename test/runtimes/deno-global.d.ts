/** The part of Deno's global the Deno test entries (deno.ts, deno-quiet.ts) use. */
declare const Deno: {
  readonly version: { readonly deno: string };
  serve(
    options: { port: number; hostname: string; onListen(address: { port: number }): void },
    handler: (request: Request, info: unknown) => Response | Promise<Response>,
  ): { shutdown(): Promise<void> };
  exit(code: number): never;
};
