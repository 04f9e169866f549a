// Make package-lock.json list every platform's optional binary package (biome, rollup,
// esbuild, …), not only the ones for the machine that wrote it.
//
// When the registry a lockfile was written against lacks some platform packages of a
// release, `npm install` silently leaves them out of the lockfile, and `npm ci` then
// refuses the lockfile as out of sync. This adds each missing optional package at the
// version its parent asks for, flagged optional, with the os/cpu/libc of the latest
// release the registry has, so `npm ci` installs exactly what it would anyway: the
// packages for the machine it runs on.
//
// Usage: node scripts/complete-lockfile.mjs [path/to/package-lock.json]
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

const file = process.argv[2] ?? 'package-lock.json';
const lock = JSON.parse(readFileSync(file, 'utf8'));
const packages = lock.packages;

function platformOf(name) {
  try {
    const out = execFileSync('npm', ['view', name, 'os', 'cpu', 'libc', '--json'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    return out.trim() ? JSON.parse(out) : {};
  } catch {
    return {};
  }
}

let added = 0;
for (const [path, meta] of Object.entries(packages)) {
  for (const [name, range] of Object.entries(meta.optionalDependencies ?? {})) {
    const nested = `${path ? `${path}/` : ''}node_modules/${name}`;
    if (packages[nested] || packages[`node_modules/${name}`]) continue;
    if (!/^\d+\.\d+\.\d+/.test(range)) continue; // only exact pins: platform binaries
    const platform = platformOf(name);
    const entry = { version: range, optional: true };
    for (const field of ['os', 'cpu', 'libc']) {
      if (platform[field] !== undefined) entry[field] = [platform[field]].flat();
    }
    packages[`node_modules/${name}`] = entry;
    added++;
  }
}
const sorted = Object.fromEntries(
  Object.entries(packages).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a < b ? -1 : 1)),
);
lock.packages = sorted;
writeFileSync(file, `${JSON.stringify(lock, null, 2)}\n`);
console.log(`${file}: added ${added} optional platform package(s)`);
