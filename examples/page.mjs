// Renders one "page" that asks repository-style getters 40 times, the way unrelated
// code paths do in a real request, and prints how many loads ran with and without the
// request cache. Run: node examples/page.mjs (after npm run build)
import { contextCached, getContextCache, withCacheContext } from 'context-cache';

let queries = 0;
const db = {
  users: new Map([1, 2, 3].map((id) => [id, { id, name: `user${id}` }])),
  repos: new Map([10, 11].map((id) => [id, { id, name: `repo${id}`, ownerId: 1 }])),
};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const getUserById = contextCached('user', async (id) => {
  queries++;
  await sleep(1);
  return db.users.get(id);
});
const getRepoById = contextCached('repo', async (id) => {
  queries++;
  await sleep(1);
  return db.repos.get(id);
});

async function renderPage() {
  const lines = [];
  // 10 issue rows, each showing author, assignee, repo and repo owner: 40 getter calls.
  for (let i = 0; i < 10; i++) {
    const [author, assignee, repo] = await Promise.all([
      getUserById((i % 3) + 1),
      getUserById(((i + 1) % 3) + 1),
      getRepoById(10 + (i % 2)),
    ]);
    const owner = await getUserById(repo.ownerId);
    lines.push(`#${i} ${repo.name} by ${author.name} -> ${assignee.name} (owner ${owner.name})`);
  }
  return lines;
}

queries = 0;
await renderPage();
const without = queries;

queries = 0;
const stats = await withCacheContext(async () => {
  await renderPage();
  return getContextCache()?.stats();
});
console.log('40 getter calls on one page');
console.log(`  without the request cache: ${without} loads`);
console.log(`  with the request cache:    ${queries} loads`, stats);
