/** chart.js registration and theme colours shared by the chart components. */
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Filler,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  LogarithmicScale,
  PointElement,
  Tooltip,
} from 'chart.js';

Chart.register(
  BarController,
  BarElement,
  CategoryScale,
  Filler,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  LogarithmicScale,
  PointElement,
  Tooltip,
);

export interface ThemeColors {
  text: string;
  muted: string;
  grid: string;
  series: string[];
}

/** Reads the chart colours of the current theme from the CSS custom properties. */
export function readThemeColors(): ThemeColors {
  const style = getComputedStyle(document.documentElement);
  const get = (name: string) => style.getPropertyValue(name).trim();
  return {
    text: get('--text'),
    muted: get('--text-muted'),
    grid: get('--chart-grid'),
    series: ['--chart-1', '--chart-2', '--chart-3', '--chart-4', '--chart-5'].map(get),
  };
}
