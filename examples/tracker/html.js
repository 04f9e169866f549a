// Tiny HTML helpers: a tagged template that escapes every interpolated value unless it
// was itself made by `html`, so a page cannot be broken (or attacked) through data.

const SAFE = Symbol('safe html');

/** @typedef {{ [SAFE]: string }} Html */

/** @param {unknown} value @returns {string} */
function escapeHtml(value) {
  return String(value)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

/**
 * @param {unknown} value
 * @returns {string}
 */
function render(value) {
  if (value === null || value === undefined || value === false) return '';
  if (Array.isArray(value)) return value.map(render).join('');
  if (typeof value === 'object' && SAFE in value) return /** @type {Html} */ (value)[SAFE];
  return escapeHtml(value);
}

/**
 * @param {TemplateStringsArray} strings
 * @param {...unknown} values
 * @returns {Html}
 */
export function html(strings, ...values) {
  let out = strings[0] ?? '';
  values.forEach((value, i) => {
    out += render(value) + (strings[i + 1] ?? '');
  });
  return { [SAFE]: out };
}

/** @param {Html} fragment @returns {string} */
export function htmlText(fragment) {
  return fragment[SAFE];
}
