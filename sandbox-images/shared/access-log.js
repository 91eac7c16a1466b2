// The access log line of the Node demo backends that log through morgan (web_static, web_dynamic,
// session_express), one per answered request on stdout:
//
//   <hostname> <remote address> <method> <url> <status> <bytes, or -> - <response time> ms
//   e.g. `web_dynamic-1 127.0.0.1 GET / 200 123 - 0.912 ms`
//
// A format function per app (not a global morgan token), so two apps in one process keep their
// own names. Plain ESM JavaScript with no imports: morgan itself comes from the backend's own
// dependencies. (An image using it needs ../shared/: its Dockerfile builds from sandbox-images/
// as the context.)

/**
 * The morgan format function that writes `hostname`'s access log lines.
 * @param {string} hostname
 * @returns {import('morgan').FormatFn}
 */
export function accessLogFormat(hostname) {
  return (tokens, req, res) =>
    [
      hostname,
      tokens['remote-addr'](req, res),
      tokens.method(req, res),
      tokens.url(req, res),
      tokens.status(req, res),
      tokens.res(req, res, 'content-length') ?? '-',
      '-',
      tokens['response-time'](req, res),
      'ms',
    ].join(' ');
}
