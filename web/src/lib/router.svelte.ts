/**
 * A tiny history-API router: `/` and `/lessons/<slug>`. Same-origin links anywhere in the page
 * (including links written in lesson Markdown) navigate without a reload, so the socket stays up.
 */
export type Route = { name: 'home' } | { name: 'lesson'; slug: string } | { name: 'not-found'; path: string };

export function matchRoute(path: string): Route {
  const clean = path.replace(/\/+$/, '') || '/';
  if (clean === '/' || clean === '/index.html') return { name: 'home' };
  const m = /^\/lessons\/([A-Za-z0-9_-]+)$/.exec(clean);
  if (m) return { name: 'lesson', slug: m[1] };
  return { name: 'not-found', path };
}

export class Router {
  path = $state(window.location.pathname);
  route = $derived(matchRoute(this.path));

  constructor() {
    window.addEventListener('popstate', () => {
      this.path = window.location.pathname;
    });
  }

  go(href: string): void {
    const url = new URL(href, window.location.href);
    if (url.pathname + url.search !== window.location.pathname + window.location.search) {
      window.history.pushState(null, '', url.pathname + url.search + url.hash);
    }
    this.path = url.pathname;
    if (url.hash) document.getElementById(decodeURIComponent(url.hash.slice(1)))?.scrollIntoView();
    else window.scrollTo(0, 0);
  }

  /** Click handler for a container: intercepts plain left clicks on same-origin, same-tab links. */
  readonly onclick = (event: MouseEvent): void => {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const a = (event.target as Element | null)?.closest?.('a');
    if (!a || !a.href || (a.target && a.target !== '_self') || a.hasAttribute('download')) return;
    const url = new URL(a.href);
    if (url.origin !== window.location.origin || url.pathname.startsWith('/api/')) return;
    // In-page anchors: let the browser scroll.
    if (url.pathname === window.location.pathname && url.hash) return;
    event.preventDefault();
    this.go(url.href);
  };
}
