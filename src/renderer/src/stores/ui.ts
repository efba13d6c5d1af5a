import { defineStore } from 'pinia';

export type Theme = 'light' | 'dark';

const STORAGE_KEY = 'lora-studio-theme';

function initialTheme(): Theme {
  if (typeof window === 'undefined') return 'light';
  const stored = window.localStorage.getItem(STORAGE_KEY);
  if (stored === 'light' || stored === 'dark') return stored;
  return window.matchMedia?.('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
}

/** Appearance: the colour theme, kept in localStorage and set as `data-theme` on <html>. */
export const useUiStore = defineStore('ui', {
  state: () => ({ theme: initialTheme() }),
  actions: {
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
