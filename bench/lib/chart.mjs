// The chart of RESULTS.md: req/s against getter calls per page, one line per contender,
// drawn with Vega-Lite and rendered to SVG by Vega, headless (no browser, no canvas).
import * as vega from 'vega';
import * as vegaLite from 'vega-lite';

export async function chartSvg(results) {
  const values = results.http
    .filter((r) => r.route === 'page' && r.store === 'latency' && r.framework === 'fastify')
    .map((r) => ({ calls: r.calls, rps: Math.round(r.rps), contender: r.contender }));
  const spec = vegaLite.compile({
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: 'Fastify page: req/s by getter calls per page',
      subtitle: `store: 1 ms per query, pool of 10 · ${results.nodes[0]} · median of 3 rounds`,
    },
    width: 520,
    height: 300,
    background: 'white',
    data: { values },
    mark: { type: 'line', point: true },
    encoding: {
      x: {
        field: 'calls',
        type: 'quantitative',
        title: 'getter calls per page',
        scale: { type: 'log', base: 2 },
      },
      y: {
        field: 'rps',
        type: 'quantitative',
        title: 'requests per second',
        scale: { type: 'log' },
      },
      color: { field: 'contender', type: 'nominal', title: 'contender' },
    },
  }).spec;
  const view = new vega.View(vega.parse(spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}
