/**
 * A tiny history-API router: `/` and `/lessons/<slug>` (a step: `#step-<n>`, or the path
 * `/lessons/<slug>/step/<n>`, rewritten to the hash form). Same-origin links anywhere in the page
 * (including links written in lesson Markdown) navigate without a reload, so the socket stays up.
 */
export type Route = { name: 'home' } | { name: 'lesson'; slug: string } | { name: 'not-found'; path: string };

/**
 * `/lessons/<slug>/step/<n>` is the same page as `/lessons/<slug>#step-<n>` (the lesson page reads
 * the step from the hash): returns that form, or null for any other path.
 */
export function stepPathToHash(path: string): string | null {
  const m = /^\/lessons\/([A-Za-z0-9_-]+)\/step\/(\d{1,3})\/?$/.exec(path);
  return m ? `/lessons/${m[1]}#step-${Number(m[2])}` : null;
}

export function matchRoute(path: string): Route {
  const clean = path.replace(/\/+$/, '') || '/';
  if (clean === '/' || clean === '/index.html') return { name: 'home' };
  const m = /^\/lessons\/([A-Za-z0-9_-]+)$/.exec(clean);
  if (m) return { name: 'lesson', slug: m[1] };
  return { name: 'not-found', path };
}

export class Router {
  path = $state(Router.#normalize());
  route = $derived(matchRoute(this.path));

  /** Rewrites a step path (`/lessons/<slug>/step/<n>`) in the address bar to its hash form; returns the path. */
  static #normalize(): string {
    const asHash = stepPathToHash(window.location.pathname);
    if (asHash) window.history.replaceState(window.history.state, '', `${asHash.split('#')[0]}${window.location.search}#${asHash.split('#')[1]}`);
    return window.location.pathname;
  }

  constructor() {
    window.addEventListener('popstate', () => {
      this.path = window.location.pathname;
    });
  }

  go(href: string): void {
    const url = new URL(href, window.location.href);
    const asHash = stepPathToHash(url.pathname);
    if (asHash) {
      url.pathname = asHash.split('#')[0];
      url.hash = asHash.split('#')[1];
    }
    const samePage = url.pathname + url.search === window.location.pathname + window.location.search;
    if (samePage && url.hash && url.hash !== window.location.hash) {
      window.location.hash = url.hash; // hashchange: the lesson page opens that step
      return;
    }
    if (!samePage) {
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
