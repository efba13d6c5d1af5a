import { defineStore } from 'pinia';

export type Theme = 'light' | 'dark';

const STORAGE_KEY = 'lora-studio-theme';

function initialTheme(): Theme {
  if (typeof window === 'undefined') return 'light';
  const stored = window.localStorage.getItem(STORAGE_KEY);
  if (stored === 'light' || stored === 'dark') return stored;
  return window.matchMedia?.('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}

export interface Toast {
  id: number;
  kind: 'success' | 'info';
  title: string;
  /** A second line, shown in monospace when it is a path. */
  detail?: string;
  detailIsPath?: boolean;
}

/** How long a toast stays before it closes itself, in milliseconds. */
export const TOAST_MS = 10_000;

/** Appearance and transient UI: the colour theme (kept in localStorage) and toasts. */
export const useUiStore = defineStore('ui', {
  state: () => ({ theme: initialTheme(), toasts: [] as Toast[], nextToastId: 1 }),
  actions: {
    notify(toast: Omit<Toast, 'id'>): number {
      const id = this.nextToastId++;
      this.toasts.push({ ...toast, id });
      if (typeof window !== 'undefined') window.setTimeout(() => this.dismissToast(id), TOAST_MS);
      return id;
    },
    dismissToast(id: number): void {
      this.toasts = this.toasts.filter((toast) => toast.id !== id);
    },
    setTheme(theme: Theme): void {
      this.theme = theme;
      if (typeof window === 'undefined') return;
      window.localStorage.setItem(STORAGE_KEY, theme);
      document.documentElement.dataset.theme = theme;
    },
    toggleTheme(): void {
      this.setTheme(this.theme === 'dark' ? 'light' : 'dark');
    },
    applyTheme(): void {
      if (typeof document !== 'undefined') document.documentElement.dataset.theme = this.theme;
    },
  },
});
