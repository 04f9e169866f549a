// The page of the HTTP scenarios: an issue list whose rows each show the author
// and its repository, the way unrelated code paths ask repository getters for the same
// few rows again and again. `calls` getter calls in rows of two, run together; authors
// alternate between two users, all issues are in one repository, so a page asks for at
// most 3 distinct rows however many calls it makes.

/** Distinct rows a page of `calls` getter calls asks for (what a request cache loads). */
export function distinctRows(calls) {
  return Math.min(calls, 3);
}

/** Render the page with `getUser(id)` and `getRepo(id)`; resolves with its JSON body. */
export async function renderPage(calls, getUser, getRepo) {
  const rows = [];
  for (let i = 0; i < calls; i += 2) {
    const authorId = 1 + ((i / 2) % 2);
    if (i + 1 < calls) {
      const [author, repo] = await Promise.all([getUser(authorId), getRepo(1)]);
      rows.push(`${repo.name}#${i / 2} by ${author.login}`);
    } else {
      const author = await getUser(authorId);
      rows.push(`#${i / 2} by ${author.login}`);
    }
  }
  return JSON.stringify({ rows });
}
