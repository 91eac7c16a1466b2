<?php
// session_php: a real PHP session app (session_start(), $_SESSION, the PHPSESSID cookie) that
// shows what happens to a login behind a load balancer when every replica keeps its sessions
// to itself. Run by PHP's built-in server with this file as the router:
//
//   php -q -S 127.0.0.1:<port> -d session.save_path=<a directory of this replica only> router.php
//
// The lab mounts it at /session/ with the prefix stripped, so it sees:
//
//   GET  /        -> 200 { hostname, user, sessionId, knownSession, visits }
//   POST /login   -> body JSON {"user": "bob"} or form user=bob (default "alice"; 1-32 letters or
//                    digits, else 400): logs in (new session id, as a login should), answers like GET /
//   POST /logout  -> destroys the session and expires the cookie, answers like GET /
//   GET  /health  -> 200 { status: "ok" }, or 503 when session.save_path is not a writable directory
//   every response: `X-Served-By: <hostname>`, `X-Session-Backend: php <version>`, no caching
//
//   user          the logged-in user of this session on THIS replica, or null
//   sessionId     the id of the session this answer used (the cookie's id; after a login, the new
//                 one), or null when there is none (no cookie, or just logged out)
//   knownSession  true when the cookie named a session this replica already had before the request
//   visits        answers this replica gave in this session (GET / and login count), 0 without one
//
// Like PHP's default configuration (session.use_strict_mode=0), a session id this replica does
// not know is adopted as a new, empty session: the next replica in the rotation answers
// "anonymous" without touching the cookie, so the login flips between replicas. Each replica
// needs its own session.save_path: php -S processes on one machine otherwise share one directory
// (/var/lib/php/sessions on Debian) and the bug this app demonstrates disappears.
//
// Environment: LAB_HOSTNAME, the replica's name (default: gethostname()); LAB_FAULT_FILE (below).
//
// Faults (lab/seams.ts Fault), through a side channel the proxy never routes: a small JSON file
// of this replica only, named by LAB_FAULT_FILE (process mode: beside its session directory;
// Docker mode: a file on a volume the lab writes). The lab writes it whole (temp file + rename);
// this router reads it at the start of EVERY request (one read of a tiny file), so a fault is in
// force for every request that starts once the file is in place. Absent or empty = healthy.
//   {"mode":"healthy"}          normal answers
//   {"mode":"unhealthy"}        GET /health answers 503; everything else as usual
//   {"mode":"slow","ms":500}    every answer, health included, waits ms (1..60000) first
//   {"mode":"errors"}           every answer but /health is a 500 with a short JSON body
//   {"mode":"hang"}             the request is accepted and never answered: the router polls the
//                               file every 50 ms and goes on (under the new fault) once it changes
// php -S runs one request at a time, so a hanging or slow request also holds the ones behind it
// (health checks included), as a single-worker server would. php runs no code between requests,
// so the `<hostname> fault: ...` log line is written by the lab when it writes the file.
// Logs: one access-log line per request on stdout
// (`<hostname> <client ip> <method> <path> <status> <bytes> - <ms> ms`), PHP warnings on stderr.
// With -q, php -S prints only its startup line (and fatal errors) on stderr.
declare(strict_types=1);

const MAX_BODY_BYTES = 16384;
const DEFAULT_USER = 'alice';
/** User names: 1-32 ASCII letters or digits. */
const USER_PATTERN = '/^[A-Za-z0-9]{1,32}$/D';
/** Session ids PHP accepts (session.sid_bits_per_character up to 6): letters, digits, "-" and ",". */
const SESSION_ID_PATTERN = '/^[A-Za-z0-9,-]{22,256}$/D';
const FAULT_MODES = ['healthy', 'unhealthy', 'slow', 'errors', 'hang'];
const MAX_SLOW_MS = 60000;
/** How often a hanging request looks at the fault file again, in microseconds. */
const HANG_POLL_US = 50000;

$startedNs = hrtime(true);
$hostname = (string) (getenv('LAB_HOSTNAME') ?: gethostname());
$state = ['status' => 200, 'bytes' => 0];

/** Writes one line to the server's stderr. */
function log_stderr(string $line): void
{
    file_put_contents('php://stderr', str_replace(["\r", "\n"], ' ', $line) . "\n");
}

set_error_handler(static function (int $level, string $message, string $file, int $line) use ($hostname): bool {
    log_stderr("{$hostname} PHP warning: {$message} in " . basename($file) . ":{$line}");
    return true;
});

/** Sends a JSON answer (the body is also what HEAD would have had; php -S drops it for HEAD). */
function answer(int $status, array $body, array $headers = []): void
{
    global $state;
    http_response_code($status);
    header('Content-Type: application/json; charset=utf-8');
    foreach ($headers as $header) {
        header($header);
    }
    $json = json_encode($body, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR);
    $state = ['status' => $status, 'bytes' => strlen($json)];
    echo $json;
}

// The access log, written once the answer is made (also after an uncaught error).
register_shutdown_function(static function () use ($hostname, $startedNs): void {
    global $state;
    $fatal = error_get_last();
    if ($fatal !== null && in_array($fatal['type'], [E_ERROR, E_PARSE, E_CORE_ERROR, E_COMPILE_ERROR], true)) {
        log_stderr("{$hostname} PHP fatal error: {$fatal['message']} in " . basename($fatal['file']) . ":{$fatal['line']}");
        $state['status'] = 500;
    }
    $path = (string) ($_SERVER['REQUEST_URI'] ?? '/');
    file_put_contents('php://stdout', sprintf(
        "%s %s %s %s %d %d - %.3f ms\n",
        $hostname,
        (string) ($_SERVER['REMOTE_ADDR'] ?? '-'),
        (string) ($_SERVER['REQUEST_METHOD'] ?? '-'),
        preg_replace('/[^\x21-\x7e]/', '?', $path),
        $state['status'],
        $state['bytes'],
        (hrtime(true) - $startedNs) / 1e6,
    ));
});

set_exception_handler(static function (Throwable $e) use ($hostname): void {
    log_stderr("{$hostname} PHP uncaught " . get_class($e) . ": {$e->getMessage()}");
    if (!headers_sent()) {
        answer(500, ['error' => 'internal error: ' . $e->getMessage(), 'hostname' => $hostname]);
    }
});

header_remove('X-Powered-By');
if (!preg_match('/^[\x21-\x7e][\x20-\x7e]*$/D', $hostname)) {
    // It goes into an HTTP header: printable ASCII only. Never healthy, so the lab says why.
    answer(500, ['error' => 'LAB_HOSTNAME must be printable ASCII (it is sent as X-Served-By)']);
    return true;
}
header('X-Served-By: ' . $hostname);
header('X-Session-Backend: php ' . PHP_VERSION);
header('Cache-Control: no-store');

// The session settings this app relies on, whatever php.ini says (save_path comes from -d).
ini_set('display_errors', '0');
ini_set('session.save_handler', 'files');
ini_set('session.name', 'PHPSESSID');
ini_set('session.use_strict_mode', '0');
ini_set('session.use_cookies', '1');
ini_set('session.use_only_cookies', '1');
ini_set('session.use_trans_sid', '0');
ini_set('session.cookie_path', '/');
ini_set('session.cookie_httponly', '1');
ini_set('session.cookie_samesite', 'Lax');
ini_set('session.cache_limiter', '');
ini_set('session.gc_probability', '0'); // a session lives as long as its replica; no random clean-up mid-lesson

/** The directory session files go to ("N;MODE;/path" form: the path is the last part). */
function session_dir(): string
{
    $parts = explode(';', (string) ini_get('session.save_path'));
    return (string) end($parts);
}

$method = (string) ($_SERVER['REQUEST_METHOD'] ?? 'GET');
$path = (string) (parse_url((string) ($_SERVER['REQUEST_URI'] ?? '/'), PHP_URL_PATH) ?? '/');
$isRead = $method === 'GET' || $method === 'HEAD';

/**
 * The fault in force, from LAB_FAULT_FILE (see the header). A missing or empty file is healthy;
 * a file that does not hold a valid fault is reported on stderr and treated as healthy.
 * @return array{mode: string, ms?: int}
 */
function read_fault(): array
{
    global $hostname;
    $file = (string) getenv('LAB_FAULT_FILE');
    if ($file === '') {
        return ['mode' => 'healthy'];
    }
    $raw = @file_get_contents($file, false, null, 0, 1024);
    if ($raw === false || trim($raw) === '') {
        return ['mode' => 'healthy'];
    }
    $data = json_decode($raw, true);
    $mode = is_array($data) ? ($data['mode'] ?? null) : null;
    if (!is_string($mode) || !in_array($mode, FAULT_MODES, true)) {
        log_stderr("{$hostname} LAB_FAULT_FILE {$file} holds no valid fault; answering as healthy");
        return ['mode' => 'healthy'];
    }
    if ($mode === 'slow') {
        $ms = $data['ms'] ?? null;
        if (!is_int($ms) || $ms < 1 || $ms > MAX_SLOW_MS) {
            log_stderr("{$hostname} LAB_FAULT_FILE {$file}: slow needs ms from 1 to " . MAX_SLOW_MS . '; answering as healthy');
            return ['mode' => 'healthy'];
        }
        return ['mode' => 'slow', 'ms' => $ms];
    }
    return ['mode' => $mode];
}

$fault = read_fault();
if ($fault['mode'] === 'hang' || $fault['mode'] === 'slow') {
    set_time_limit(0);
}
while ($fault['mode'] === 'hang') {
    usleep(HANG_POLL_US);
    $fault = read_fault();
}
if ($fault['mode'] === 'slow') {
    usleep($fault['ms'] * 1000);
}
$isHealth = $path === '/health';
if ($fault['mode'] === 'errors' && !$isHealth) {
    answer(500, ['error' => 'fault: errors', 'hostname' => $hostname]);
    return true;
}
if ($fault['mode'] === 'unhealthy' && $isHealth) {
    answer(503, ['status' => 'failing', 'error' => 'fault: unhealthy', 'hostname' => $hostname]);
    return true;
}

// What the request's cookie names, looked at before session_start() touches anything.
$cookieId = $_COOKIE[session_name()] ?? null;
$cookieId = is_string($cookieId) ? $cookieId : null;
$validId = $cookieId !== null && preg_match(SESSION_ID_PATTERN, $cookieId) === 1;
$knownSession = $validId && is_file(session_dir() . '/sess_' . $cookieId);

/** The answer for the session in force (after session_start()), or for none. */
function view(bool $knownSession, bool $hasSession): array
{
    global $hostname;
    $user = $hasSession ? ($_SESSION['user'] ?? null) : null;
    return [
        'hostname' => $hostname,
        'user' => is_string($user) ? $user : null,
        'sessionId' => $hasSession && session_id() !== '' ? session_id() : null,
        'knownSession' => $knownSession,
        'visits' => $hasSession ? (int) ($_SESSION['visits'] ?? 0) : 0,
    ];
}

/** session_start(), or a 500 answer (false) when PHP cannot open the session. */
function start_session(): bool
{
    global $hostname;
    if (session_start()) {
        return true;
    }
    answer(500, ['error' => 'session_start() failed: is session.save_path (' . session_dir() . ') writable?', 'hostname' => $hostname]);
    return false;
}

/** The user name from the body of POST /login, or an error answer (null). */
function login_user(): ?string
{
    global $hostname;
    $length = (int) ($_SERVER['CONTENT_LENGTH'] ?? 0);
    if ($length > MAX_BODY_BYTES) {
        answer(413, ['error' => 'the body must be at most ' . MAX_BODY_BYTES . ' bytes', 'hostname' => $hostname]);
        return null;
    }
    $type = strtolower(trim(explode(';', (string) ($_SERVER['CONTENT_TYPE'] ?? ''))[0]));
    $raw = (string) file_get_contents('php://input', false, null, 0, MAX_BODY_BYTES + 1);
    if (strlen($raw) > MAX_BODY_BYTES) {
        answer(413, ['error' => 'the body must be at most ' . MAX_BODY_BYTES . ' bytes', 'hostname' => $hostname]);
        return null;
    }
    $user = null;
    if ($type === 'application/json') {
        if (trim($raw) !== '') {
            try {
                $data = json_decode($raw, false, 8, JSON_THROW_ON_ERROR);
            } catch (JsonException $e) {
                answer(400, ['error' => 'the body is not valid JSON: ' . $e->getMessage(), 'hostname' => $hostname]);
                return null;
            }
            if (!($data instanceof stdClass)) {
                answer(400, ['error' => 'the body must be a JSON object such as {"user":"alice"}', 'hostname' => $hostname]);
                return null;
            }
            $user = $data->user ?? null;
        }
    } elseif ($type === 'application/x-www-form-urlencoded') {
        $user = $_POST['user'] ?? null;
    } elseif ($raw !== '') {
        answer(415, ['error' => 'send the user as JSON ({"user":"alice"}) or as a form field user=alice', 'hostname' => $hostname]);
        return null;
    }
    $user ??= DEFAULT_USER;
    if (!is_string($user) || preg_match(USER_PATTERN, $user) !== 1) {
        answer(400, ['error' => 'user must be 1-32 letters or digits', 'hostname' => $hostname]);
        return null;
    }
    return $user;
}

/** Expires the session cookie in the browser. */
function expire_cookie(): void
{
    setcookie(session_name(), '', ['expires' => 1, 'path' => '/', 'httponly' => true, 'samesite' => 'Lax']);
}

$routes = ['/' => 'GET, HEAD', '/health' => 'GET, HEAD', '/login' => 'POST', '/logout' => 'POST'];
if (!isset($routes[$path])) {
    answer(404, ['error' => "no route for {$method} {$path}", 'hostname' => $hostname]);
    return true;
}
$allowed = $routes[$path] === 'POST' ? $method === 'POST' : $isRead;
if (!$allowed) {
    answer(405, ['error' => "{$path} answers {$routes[$path]} only", 'hostname' => $hostname], ['Allow: ' . $routes[$path]]);
    return true;
}

switch ($path) {
    case '/health':
        $dir = session_dir();
        if ($dir === '' || !is_dir($dir) || !is_writable($dir)) {
            answer(503, ['status' => 'failing', 'error' => "session.save_path ({$dir}) is not a writable directory"]);
        } else {
            answer(200, ['status' => 'ok']);
        }
        break;

    case '/':
        // A visitor without a session cookie gets no session (and no cookie) until they log in.
        if (!$validId) {
            answer(200, view(false, false));
            break;
        }
        if (!start_session()) {
            break;
        }
        $_SESSION['visits'] = (int) ($_SESSION['visits'] ?? 0) + 1;
        $body = view($knownSession, true);
        session_write_close();
        answer(200, $body);
        break;

    case '/login':
        $user = login_user();
        if ($user === null) {
            break;
        }
        if ($cookieId !== null && !$validId) {
            session_id(session_create_id()); // a malformed cookie: start afresh instead of failing
        }
        if (!start_session()) {
            break;
        }
        session_regenerate_id(true); // a new id at login (no session fixation); the old file is removed
        $_SESSION['user'] = $user;
        $_SESSION['visits'] = (int) ($_SESSION['visits'] ?? 0) + 1;
        $body = view($knownSession, true);
        session_write_close();
        answer(200, $body);
        break;

    case '/logout':
        if ($validId) {
            if (!start_session()) {
                break;
            }
            $_SESSION = [];
            session_destroy();
        }
        if ($cookieId !== null) {
            expire_cookie();
        }
        answer(200, view($knownSession, false));
        break;
}
return true;
