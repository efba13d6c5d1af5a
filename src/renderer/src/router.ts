import { createRouter, createWebHashHistory } from 'vue-router';
import CompareView from './views/CompareView.vue';
import HistoryView from './views/HistoryView.vue';
import RunView from './views/RunView.vue';
import SystemView from './views/SystemView.vue';
import WizardView from './views/WizardView.vue';

export const WIZARD_STEPS = [
  { key: 'model', label: 'Model' },
  { key: 'dataset', label: 'Dataset' },
  { key: 'settings', label: 'Settings' },
  { key: 'train', label: 'Train' },
  { key: 'result', label: 'Result' },
] as const;
export type WizardStep = (typeof WIZARD_STEPS)[number]['key'];

// Hash history works both from file:// in the desktop app and behind the web bridge.
export const router = createRouter({
  history: createWebHashHistory(),
  // A new page starts at its top; Back and Forward return to where the user was.
  scrollBehavior: (_to, _from, savedPosition) => savedPosition ?? { top: 0 },
  routes: [
    { path: '/', redirect: '/new/model' },
    { path: '/new', redirect: '/new/model' },
    { path: '/new/:step(model|dataset|settings|train|result)', name: 'wizard', component: WizardView, props: true },
    { path: '/runs', name: 'history', component: HistoryView },
    { path: '/runs/:id', name: 'run', component: RunView, props: true },
    { path: '/compare', name: 'compare', component: CompareView },
    { path: '/system', name: 'system', component: SystemView },
    { path: '/:pathMatch(.*)*', redirect: '/new/model' },
  ],
});
