/**
 * SVG charts of a run's ratios, rendered in Node without a browser: a Vega-Lite spec compiled to Vega
 * and rendered with vega's headless View.toSVG(). Bars start at 1 on a log scale, so "sealbox ÷
 * baseline = 0.5" and "= 2" are equally long, on opposite sides. Time series (bench/soak.ts) are
 * stacked line panels over one time axis, each panel with its own y scale. vega and vega-lite are ES
 * modules; this CommonJS build loads them with import(), which TypeScript keeps as a real dynamic import.
 */
import type { Ratio } from './report';
import { writeResultFile } from './report';

export interface ChartOptions {
  readonly title: string;
  readonly subtitle?: string;
}

/** Renders ratios (those with a value) as a horizontal bar chart; returns the SVG text. */
export async function ratioChartSvg(ratios: readonly Ratio[], options: ChartOptions): Promise<string> {
  const values = ratios
    .filter((r) => r.value !== undefined && Number.isFinite(r.value) && r.value > 0)
    .map((r) => ({ name: r.name, value: r.value!, label: formatRatio(r.value!), side: r.value! >= 1 }));
  const max = Math.max(2, ...values.map((v) => v.value));
  const min = Math.min(0.5, ...values.map((v) => v.value));
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: options.title, ...(options.subtitle ? { subtitle: options.subtitle } : {}) },
    width: 420,
    height: { step: 22 },
    background: 'white',
    data: { values },
    encoding: {
      y: { field: 'name', type: 'nominal', sort: null, title: null, axis: { labelLimit: 420 } },
    },
    layer: [
      {
        mark: { type: 'bar', height: { band: 0.7 } },
        encoding: {
          x: {
            field: 'value',
            type: 'quantitative',
            scale: { type: 'log', domain: [min / 1.3, max * 1.3] },
            title: 'ratio (log scale; 1 = parity)',
          },
          x2: { datum: 1 },
          color: {
            field: 'side',
            type: 'nominal',
            legend: null,
            scale: { domain: [true, false], range: ['#4c78a8', '#e45756'] },
          },
        },
      },
      {
        mark: { type: 'text', align: 'left', dx: 4, fontSize: 10 },
        encoding: {
          x: { field: 'value', type: 'quantitative' },
          text: { field: 'label' },
        },
      },
      {
        mark: { type: 'rule', color: '#333' },
        encoding: { x: { datum: 1 } },
      },
    ],
  };
  return renderSvg(spec);
}

/** Compiles a Vega-Lite spec and renders it headless to SVG text. */
async function renderSvg(spec: object): Promise<string> {
  const vega = await import('vega');
  const vegaLite = await import('vega-lite');
  const compiled = vegaLite.compile(spec as unknown as Parameters<typeof vegaLite.compile>[0]).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** One value of a time series: `series` is drawn as a line in `panel` at time `t`. */
export interface SeriesPoint {
  readonly t: number;
  readonly panel: string;
  readonly series: string;
  readonly value: number;
}

export interface TimeSeriesOptions extends ChartOptions {
  readonly xTitle: string;
  /** Vertical rules drawn across every panel (e.g. where the load started and stopped). */
  readonly marks?: ReadonlyArray<{ readonly t: number; readonly label: string }>;
}

/** Renders stacked line panels (one per `panel`, in first-seen order) over a shared time axis. */
export async function timeSeriesChartSvg(
  points: readonly SeriesPoint[],
  options: TimeSeriesOptions,
): Promise<string> {
  const values = points.filter((p) => Number.isFinite(p.value) && Number.isFinite(p.t));
  const panels = [...new Set(values.map((p) => p.panel))];
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: options.title, ...(options.subtitle ? { subtitle: options.subtitle } : {}) },
    background: 'white',
    data: { values },
    facet: {
      row: {
        field: 'panel',
        type: 'nominal',
        sort: panels,
        title: null,
        header: { labelAngle: 0, labelOrient: 'top', labelAnchor: 'start', labelFontWeight: 'bold' },
      },
    },
    spec: {
      width: 560,
      height: 90,
      layer: [
        {
          mark: { type: 'line', point: { size: 12 }, strokeWidth: 1.5 },
          encoding: {
            x: { field: 't', type: 'quantitative', title: options.xTitle },
            y: { field: 'value', type: 'quantitative', title: null, scale: { zero: true } },
            color: { field: 'series', type: 'nominal', title: null },
          },
        },
        ...(options.marks ?? []).map((m) => ({
          mark: { type: 'rule', color: '#888', strokeDash: [4, 3] },
          encoding: { x: { datum: m.t }, tooltip: { value: m.label } },
        })),
      ],
    },
    resolve: { scale: { y: 'independent' } },
  };
  return renderSvg(spec);
}

/** Renders and writes bench/results/<base>.svg; returns its path. */
export async function writeTimeSeriesChart(
  base: string,
  points: readonly SeriesPoint[],
  options: TimeSeriesOptions,
): Promise<string> {
  return writeResultFile(`${base}.svg`, await timeSeriesChartSvg(points, options));
}

/** Renders and writes bench/results/<base>.svg; returns its path. */
export async function writeRatioChart(
  base: string,
  ratios: readonly Ratio[],
  options: ChartOptions,
): Promise<string> {
  return writeResultFile(`${base}.svg`, await ratioChartSvg(ratios, options));
}

function formatRatio(v: number): string {
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}
