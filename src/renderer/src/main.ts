import { createPinia } from 'pinia';
import { createApp } from 'vue';
import App from './App.vue';
import { router } from './router';
import { useUiStore } from './stores/ui';
import './styles.css';

const app = createApp(App);
app.use(createPinia());
app.use(router);
useUiStore().applyTheme();
app.mount('#app');
