// Small helpers shared by the bench scripts: argv parsing, tables, medians.

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
