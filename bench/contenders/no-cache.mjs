// No cache at all: every getter call runs its loader. The floor for "costs nothing".
export default {
  name: 'no cache',
  scoped: false,
  request: (fn) => fn(),
  getter: (_group, loader) => async (key) => loader(key),
  compositeGetter: (_group, loader) => async (a, b) => loader(a, b),
  syncGetter: (_group, loader) => (key) => loader(key),
};
