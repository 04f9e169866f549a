// Small helpers shared by the bench scripts: argv parsing, tables, medians, the Node
// binaries the bench runs on.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Whether `name` (such as `--quick`) is on the command line. */
export function flag(name) {
  return process.argv.includes(name);
}

/** The value after `name` on the command line, or undefined. */
export function option(name) {
  const i = process.argv.indexOf(name);
  return i === -1 ? undefined : process.argv[i + 1];
}

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** A Markdown table: `head` is the header row, `rows` the cells (strings). */
export function markdownTable(head, rows) {
  const line = (cells) => `| ${cells.join(' | ')} |`;
  return [line(head), line(head.map(() => '---')), ...rows.map(line)].join('\n');
}

export function printTable(title, head, rows) {
  console.log(`\n${title}\n${markdownTable(head, rows)}`);
}

/** What `bin` prints for `args` (its version by default), or undefined when it does not run. */
export function versionOf(bin, args = ['--version']) {
  try {
    return execFileSync(bin, args, {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    return undefined;
  }
}

/**
 * The Node binaries the bench runs on, as `{ bin, version }`: the one running this script
 * (as npm runs it) and, when the bench's own `node` package installed a Node that runs and
 * is another version, that Node 24 binary (AsyncContextFrame on by default).
 */
export function benchNodes() {
  const system = process.env.npm_node_execpath ?? process.execPath;
  const nodes = [{ bin: system, version: versionOf(system) }];
  const bundled = fileURLToPath(new URL('../node_modules/node/bin/node', import.meta.url));
  const version = existsSync(bundled) ? versionOf(bundled) : undefined;
  if (version !== undefined && version !== nodes[0].version) nodes.push({ bin: bundled, version });
  return nodes;
}
