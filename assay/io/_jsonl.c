/*
 * A strict parser for blocks of JSON lines whose records are flat objects (string, number,
 * boolean and null values), the shape of nearly every pretraining corpus. It builds Arrow
 * columns directly, outside the GIL, and gives up (returns None) on anything else, so that
 * pyarrow's reader, and then the line-by-line reader, decide: nested values, a syntax error,
 * invalid UTF-8, a lone UTF-16 surrogate escape, a duplicate key, a column whose values mix
 * strings, numbers and booleans, an integer beyond int64, a record split across lines.
 *
 * What it accepts it reads as pyarrow does: columns in order of first appearance, a missing
 * key is null, integers are int64 unless a column also holds a fraction or an exponent (then
 * every value is a double, correctly rounded), a column of only nulls has the null type, and
 * strings are unescaped exactly. See assay/io/flat.py for the Python side.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__linux__)
#include <locale.h>
#include <sys/mman.h>
#endif

/* Large buffers are aligned for transparent huge pages and kept for reuse when freed: a fresh
 * 4 KiB page costs a fault on first touch (and a huge page is cleared when first touched),
 * which for a block of text costs about as much as parsing it. A small pool of freed buffers
 * (at most POOL_BYTES) spares the next blocks both. */
#define HUGE_BYTES ((size_t)2 << 20)
#define POOL_FROM ((size_t)256 << 10)
#define POOL_SLOTS 16
#define POOL_BYTES ((size_t)96 << 20)

static struct {
    void *p;
    size_t cap;
} pool[POOL_SLOTS];
static int pool_n;
static size_t pool_bytes;
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;

/* At least n bytes; *cap is what the buffer holds. */
static void *big_alloc(size_t n, size_t *cap) {
    void *p = NULL;
    if (n < POOL_FROM) {
        *cap = n ? n : 1;
        return malloc(*cap);
    }
    pthread_mutex_lock(&pool_lock);
    int best = -1;
    for (int i = 0; i < pool_n; i++)
        if (pool[i].cap >= n && (best < 0 || pool[i].cap < pool[best].cap))
            best = i;
    if (best >= 0) {
        p = pool[best].p;
        *cap = pool[best].cap;
        pool_bytes -= *cap;
        pool[best] = pool[--pool_n];
    }
    pthread_mutex_unlock(&pool_lock);
    if (p != NULL)
        return p;
    n = (n + HUGE_BYTES - 1) & ~(HUGE_BYTES - 1);
    if (posix_memalign(&p, HUGE_BYTES, n) != 0)
        return NULL;
#if defined(MADV_HUGEPAGE)
    madvise(p, n, MADV_HUGEPAGE);
#endif
    *cap = n;
    return p;
}

/* A child forked while another thread held the lock would wait for it forever: it starts
 * with a fresh lock and an empty pool (the parent's buffers stay the parent's). */
static void pool_after_fork(void) {
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    pool_lock = fresh;
    pool_n = 0;
    pool_bytes = 0;
}

static void big_free(void *p, size_t cap) {
    if (p == NULL)
        return;
    if (cap >= POOL_FROM) {
        pthread_mutex_lock(&pool_lock);
        if (pool_n < POOL_SLOTS && pool_bytes + cap <= POOL_BYTES) {
            pool[pool_n].p = p;
            pool[pool_n].cap = cap;
            pool_n++;
            pool_bytes += cap;
            p = NULL;
        }
        pthread_mutex_unlock(&pool_lock);
    }
    free(p);
}

/* ------------------------------------------------------------------------------------------
 * Chunk: memory owned here, handed to Python through the buffer protocol (no copy). */

typedef struct {
    PyObject_HEAD
    char *data;
    Py_ssize_t size;
    size_t cap;
} Chunk;

static void Chunk_dealloc(Chunk *self) {
    big_free(self->data, self->cap);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Chunk_getbuffer(Chunk *self, Py_buffer *view, int flags) {
    return PyBuffer_FillInfo(view, (PyObject *)self, self->data, self->size, 1, flags);
}

static PyBufferProcs Chunk_as_buffer = {(getbufferproc)Chunk_getbuffer, NULL};

static PyTypeObject ChunkType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "assay.io._jsonl.Chunk",
    .tp_basicsize = sizeof(Chunk),
    .tp_dealloc = (destructor)Chunk_dealloc,
    .tp_as_buffer = &Chunk_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Bytes built by the parser, exported without a copy.",
};

/* Takes ownership of data (freed with the chunk, or here on failure). */
static PyObject *chunk_new(char *data, Py_ssize_t size, size_t cap) {
    Chunk *c = PyObject_New(Chunk, &ChunkType);
    if (c == NULL) {
        big_free(data, cap);
        return NULL;
    }
    c->data = data;
    c->size = size;
    c->cap = cap;
    return (PyObject *)c;
}

/* ------------------------------------------------------------------------------------------
 * Columns */

enum { K_NULL = 0, K_STRING = 1, K_INT = 2, K_DOUBLE = 3, K_BOOL = 4 };

typedef struct {
    char *name;
    size_t name_len;
    int kind;
    int64_t last_row; /* the row that last set this column (a second key in it: duplicate) */
    Py_ssize_t nulls;
    uint8_t *valid;   /* per row: 1 when a value is present */
    int64_t *offsets; /* K_STRING: rows + 1 */
    char *data;       /* K_STRING: the block's length at most */
    size_t data_len, data_cap;
    int64_t *ints;  /* K_INT (and K_DOUBLE's storage, reinterpreted) */
    uint8_t *bools; /* K_BOOL */
} Col;

#define MAX_COLS 256
#define MAX_KEY 512

typedef struct {
    const uint8_t *start, *end;
    size_t block_len;
    Col cols[MAX_COLS];
    int ncols;
    int64_t rows, cap;
    uint8_t key[MAX_KEY];
    size_t key_len;
#if defined(__linux__)
    locale_t c_locale;
#endif
} Parser;

static int grow_rows(Parser *ps) {
    int64_t cap = ps->cap ? ps->cap * 2 : 4096;
    for (int i = 0; i < ps->ncols; i++) {
        Col *c = &ps->cols[i];
        uint8_t *v = realloc(c->valid, cap);
        if (!v)
            return -1;
        c->valid = v;
        if (c->offsets) {
            int64_t *o = realloc(c->offsets, (cap + 1) * sizeof(int64_t));
            if (!o)
                return -1;
            c->offsets = o;
        }
        if (c->ints) {
            int64_t *o = realloc(c->ints, cap * sizeof(int64_t));
            if (!o)
                return -1;
            c->ints = o;
        }
        if (c->bools) {
            uint8_t *o = realloc(c->bools, cap);
            if (!o)
                return -1;
            c->bools = o;
        }
    }
    ps->cap = cap;
    return 0;
}

/* Give a column its kind once its first value arrives: earlier rows (nulls) get zeros. */
static int set_kind(Parser *ps, Col *c, int kind) {
    int64_t n = ps->rows; /* rows before this one, all null here */
    c->kind = kind;
    if (kind == K_STRING) {
        c->offsets = calloc(ps->cap + 1, sizeof(int64_t));
        c->data = big_alloc(ps->block_len + 16, &c->data_cap);
        if (!c->offsets || !c->data)
            return -1;
    } else if (kind == K_INT || kind == K_DOUBLE) {
        c->ints = calloc(ps->cap, sizeof(int64_t));
        if (!c->ints)
            return -1;
    } else if (kind == K_BOOL) {
        c->bools = calloc(ps->cap, 1);
        if (!c->bools)
            return -1;
    }
    (void)n;
    return 0;
}

static Col *find_col(Parser *ps, int *hint) {
    /* Records usually repeat the previous one's key order: try the next column first. */
    for (int k = 0; k < ps->ncols; k++) {
        int i = (*hint + k) % ps->ncols;
        Col *c = &ps->cols[i];
        if (c->name_len == ps->key_len && memcmp(c->name, ps->key, ps->key_len) == 0) {
            *hint = i + 1;
            return c;
        }
    }
    if (ps->ncols == MAX_COLS)
        return NULL;
    Col *c = &ps->cols[ps->ncols];
    memset(c, 0, sizeof(Col));
    c->name = malloc(ps->key_len + 1);
    c->valid = calloc(ps->cap, 1); /* earlier rows: null */
    if (!c->name || !c->valid)
        return NULL;
    memcpy(c->name, ps->key, ps->key_len);
    c->name_len = ps->key_len;
    c->last_row = -1;
    c->nulls = ps->rows;
    ps->ncols++;
    *hint = ps->ncols;
    return c;
}

static void free_cols(Parser *ps) {
    for (int i = 0; i < ps->ncols; i++) {
        Col *c = &ps->cols[i];
        free(c->name);
        free(c->valid);
        free(c->offsets);
        big_free(c->data, c->data_cap);
        free(c->ints);
        free(c->bools);
    }
    ps->ncols = 0;
}

/* ------------------------------------------------------------------------------------------
 * Tokens. Each returns 0 on success, -1 when the block is not for this parser. */

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

static inline int is_ws(uint8_t b) { return b == ' ' || b == '\t' || b == '\r'; }

static const uint8_t *skip_ws(const uint8_t *p, const uint8_t *end) {
    while (p < end && is_ws(*p))
        p++;
    return p;
}

static int hex4(const uint8_t *p, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t b = p[i];
        v <<= 4;
        if (b >= '0' && b <= '9')
            v |= b - '0';
        else if (b >= 'a' && b <= 'f')
            v |= b - 'a' + 10;
        else if (b >= 'A' && b <= 'F')
            v |= b - 'A' + 10;
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* Length of a valid UTF-8 sequence starting with a byte >= 0x80 at p, or 0. */
static inline size_t utf8_len(const uint8_t *p, const uint8_t *end) {
    uint8_t b = p[0];
    if (b >= 0xC2 && b <= 0xDF) {
        if (end - p >= 2 && (p[1] & 0xC0) == 0x80)
            return 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
        if (end - p < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
            return 0;
        if (b == 0xE0 && p[1] < 0xA0) /* overlong */
            return 0;
        if (b == 0xED && p[1] >= 0xA0) /* a surrogate */
            return 0;
        return 3;
    } else if (b >= 0xF0 && b <= 0xF4) {
        if (end - p < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 ||
            (p[3] & 0xC0) != 0x80)
            return 0;
        if (b == 0xF0 && p[1] < 0x90) /* overlong */
            return 0;
        if (b == 0xF4 && p[1] >= 0x90) /* beyond U+10FFFF */
            return 0;
        return 4;
    }
    return 0;
}

static uint8_t *put_utf8(uint8_t *out, unsigned cp) {
    if (cp < 0x80) {
        *out++ = (uint8_t)cp;
    } else if (cp < 0x800) {
        *out++ = (uint8_t)(0xC0 | (cp >> 6));
        *out++ = (uint8_t)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *out++ = (uint8_t)(0xE0 | (cp >> 12));
        *out++ = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        *out++ = (uint8_t)(0x80 | (cp & 0x3F));
    } else {
        *out++ = (uint8_t)(0xF0 | (cp >> 18));
        *out++ = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
        *out++ = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        *out++ = (uint8_t)(0x80 | (cp & 0x3F));
    }
    return out;
}

/* Copy the run of plain bytes at p (printable ASCII other than a quote or a backslash) to *o;
 * where it ends. Sixteen bytes at a time with SSE2, eight with plain 64-bit arithmetic
 * elsewhere; the copy may write up to 16 bytes past the run, which the output has room for
 * (it is never ahead of the input). */
static inline const uint8_t *plain_run(const uint8_t *p, const uint8_t *end, uint8_t **out) {
    uint8_t *o = *out;
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
    const __m128i space = _mm_set1_epi8(0x20);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        /* a signed compare: bytes below 0x20 and from 0x80 on (negative) are both "less" */
        __m128i special = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote),
                                                     _mm_cmpeq_epi8(v, backslash)),
                                       _mm_cmplt_epi8(v, space));
        int mask = _mm_movemask_epi8(special);
        _mm_storeu_si128((__m128i *)o, v);
        if (mask) {
            int k = __builtin_ctz((unsigned)mask);
            *out = o + k;
            return p + k;
        }
        o += 16;
        p += 16;
    }
#elif defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (end - p >= 8) {
        uint64_t x, q, b;
        memcpy(&x, p, 8);
        q = x ^ (ONES * '"');
        b = x ^ (ONES * '\\');
        /* the lowest flagged byte is exact (false flags only sit above a true one) */
        uint64_t special =
            (((q - ONES) & ~q) | ((b - ONES) & ~b) | ((x - ONES * 0x20) & ~x) | x) & HIGHS;
        memcpy(o, &x, 8);
        if (special) {
            int k = __builtin_ctzll(special) >> 3;
            *out = o + k;
            return p + k;
        }
        o += 8;
        p += 8;
    }
#endif
    while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
        *o++ = *p++;
    *out = o;
    return p;
}

/* A string whose opening quote is at *pp; its unescaped UTF-8 goes to out (room for the
 * rest of the block is there: unescaping never lengthens). On success *pp is past the closing
 * quote and *len the bytes written. */
static int read_string(const uint8_t **pp, const uint8_t *end, uint8_t *out, size_t *len) {
    const uint8_t *p = *pp + 1;
    uint8_t *o = out;
    for (;;) {
        p = plain_run(p, end, &o);
        if (p >= end)
            return -1;
        uint8_t c = *p;
        if (c == '"') {
            *pp = p + 1;
            *len = (size_t)(o - out);
            return 0;
        }
        if (c == '\\') {
            if (end - p < 2)
                return -1;
            switch (p[1]) {
            case '"': *o++ = '"'; break;
            case '\\': *o++ = '\\'; break;
            case '/': *o++ = '/'; break;
            case 'b': *o++ = '\b'; break;
            case 'f': *o++ = '\f'; break;
            case 'n': *o++ = '\n'; break;
            case 'r': *o++ = '\r'; break;
            case 't': *o++ = '\t'; break;
            case 'u': {
                unsigned cp, lo;
                if (end - p < 6 || hex4(p + 2, &cp) != 0)
                    return -1;
                if (cp >= 0xD800 && cp <= 0xDBFF) { /* needs its low half next */
                    if (end - p < 12 || p[6] != '\\' || p[7] != 'u' || hex4(p + 8, &lo) != 0 ||
                        lo < 0xDC00 || lo > 0xDFFF)
                        return -1;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    return -1; /* a lone low surrogate */
                }
                o = put_utf8(o, cp);
                p += 6;
                continue;
            }
            default:
                return -1;
            }
            p += 2;
            continue;
        }
        if (c < 0x20)
            return -1; /* a raw control character (a newline too): not JSON */
        if (c < 0x80) {
            *o++ = c;
            p++;
            continue;
        }
        /* Text in other scripts: a byte at a time, multi-byte characters validated as they
         * are copied, until a run of plain ASCII long enough to go back to plain_run. */
        int ascii = 0;
        while (p < end && ascii < 16) {
            uint8_t d = *p;
            if (d < 0x80) {
                if (d == '"' || d == '\\' || d < 0x20)
                    break;
                *o++ = d;
                p++;
                ascii++;
                continue;
            }
            size_t n = utf8_len(p, end);
            if (n == 0)
                return -1;
            o[0] = p[0];
            o[1] = p[1];
            if (n > 2)
                o[2] = p[2];
            if (n > 3)
                o[3] = p[3];
            o += n;
            p += n;
            ascii = 0;
        }
    }
}

static int is_digit(uint8_t b) { return b >= '0' && b <= '9'; }

/* Past the character at *pp, one digit or more (a fraction's or an exponent's). */
static int digits(const uint8_t **pp, const uint8_t *end) {
    const uint8_t *p = *pp + 1;
    if (p >= end || !is_digit(*p))
        return -1;
    while (p < end && is_digit(*p))
        p++;
    *pp = p;
    return 0;
}

/* A JSON number at *pp: an int64 (*is_double = 0) or a double. */
static int read_number(Parser *ps, const uint8_t **pp, const uint8_t *end, int64_t *iv,
                       double *dv, int *is_double) {
    const uint8_t *p = *pp, *start = p;
    int neg = 0;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= end)
        return -1;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && is_digit(*p))
            p++;
    } else {
        return -1;
    }
    int frac = 0;
    if (p < end && *p == '.') {
        if (digits(&p, end) != 0)
            return -1;
        frac = 1;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        if (p + 1 < end && (p[1] == '+' || p[1] == '-'))
            p++;
        if (digits(&p, end) != 0)
            return -1;
        frac = 1;
    }
    *pp = p;
    if (!frac) {
        uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        for (const uint8_t *q = start + neg; q < p; q++) {
            unsigned d = *q - '0';
            if (v > (limit - d) / 10)
                return -1; /* beyond int64 */
            v = v * 10 + d;
        }
        *iv = neg ? (int64_t)(0 - v) : (int64_t)v;
        *is_double = 0;
        return 0;
    }
    char buf[128];
    size_t n = (size_t)(p - start);
    if (n >= sizeof(buf))
        return -1;
    memcpy(buf, start, n);
    buf[n] = 0;
    char *stop;
    errno = 0;
#if defined(__linux__)
    double d = strtod_l(buf, &stop, ps->c_locale);
#else
    double d = strtod(buf, &stop);
#endif
    if (stop != buf + n || isinf(d) || isnan(d))
        return -1;
    *dv = d;
    *is_double = 1;
    return 0;
}

static int lit(const uint8_t **pp, const uint8_t *end, const char *word, size_t n) {
    if ((size_t)(end - *pp) < n || memcmp(*pp, word, n) != 0)
        return -1;
    *pp += n;
    return 0;
}

/* Row r of column c is null (a `null`, or a key the record does not have). */
static void set_null(Col *c, int64_t r) {
    c->valid[r] = 0;
    c->nulls++;
    if (c->kind == K_STRING)
        c->offsets[r + 1] = (int64_t)c->data_len;
    else if (c->kind == K_INT || c->kind == K_DOUBLE)
        c->ints[r] = 0;
    else if (c->kind == K_BOOL)
        c->bools[r] = 0;
}

/* One value for column c in the current row. */
static int read_value(Parser *ps, const uint8_t **pp, const uint8_t *end, Col *c) {
    const uint8_t *p = *pp;
    int64_t r = ps->rows;
    uint8_t b = *p;
    if (b == '"') {
        if (c->kind == K_NULL && set_kind(ps, c, K_STRING) != 0)
            return -1;
        if (c->kind != K_STRING)
            return -1;
        size_t n;
        if (read_string(&p, end, (uint8_t *)c->data + c->data_len, &n) != 0)
            return -1;
        c->data_len += n;
        c->offsets[r + 1] = (int64_t)c->data_len;
        c->valid[r] = 1;
    } else if (b == 'n') {
        if (lit(&p, end, "null", 4) != 0)
            return -1;
        set_null(c, r);
    } else if (b == 't' || b == 'f') {
        int v = b == 't';
        if (lit(&p, end, v ? "true" : "false", v ? 4 : 5) != 0)
            return -1;
        if (c->kind == K_NULL && set_kind(ps, c, K_BOOL) != 0)
            return -1;
        if (c->kind != K_BOOL)
            return -1;
        c->bools[r] = (uint8_t)v;
        c->valid[r] = 1;
    } else if (b == '-' || is_digit(b)) {
        int64_t iv;
        double dv;
        int is_double;
        if (read_number(ps, &p, end, &iv, &dv, &is_double) != 0)
            return -1;
        if (c->kind == K_NULL && set_kind(ps, c, is_double ? K_DOUBLE : K_INT) != 0)
            return -1;
        if (c->kind == K_INT && is_double) { /* promote the column: ints become doubles */
            for (int64_t i = 0; i < r; i++) {
                double d = (double)c->ints[i];
                memcpy(&c->ints[i], &d, sizeof d);
            }
            c->kind = K_DOUBLE;
        }
        if (c->kind == K_INT) {
            c->ints[r] = iv;
        } else if (c->kind == K_DOUBLE) {
            double d = is_double ? dv : (double)iv;
            memcpy(&c->ints[r], &d, sizeof d);
        } else {
            return -1;
        }
        c->valid[r] = 1;
    } else {
        return -1; /* an object or an array: nested, left to pyarrow */
    }
    *pp = p;
    return 0;
}

/* One line holding one object, from p to the newline (or the end). */
static int read_record(Parser *ps, const uint8_t **pp, const uint8_t *end) {
    const uint8_t *p = *pp;
    int hint = 0;
    int64_t r = ps->rows;
    if (r == ps->cap && grow_rows(ps) != 0)
        return -1;
    p++; /* '{' */
    p = skip_ws(p, end);
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            if (p >= end || *p != '"')
                return -1;
            /* the key: short, unescaped into ps->key */
            const uint8_t *k = p + 1;
            const uint8_t *q = k;
            while (q < end && *q != '"' && *q != '\\' && *q >= 0x20 && q - k < MAX_KEY)
                q++;
            if (q >= end || *q != '"')
                return -1; /* escaped, too long or broken: left to pyarrow */
            for (const uint8_t *s = k; s < q;) {
                if (*s < 0x80) {
                    s++;
                    continue;
                }
                size_t n = utf8_len(s, q);
                if (n == 0)
                    return -1;
                s += n;
            }
            ps->key_len = (size_t)(q - k);
            memcpy(ps->key, k, ps->key_len);
            p = skip_ws(q + 1, end);
            if (p >= end || *p != ':')
                return -1;
            p = skip_ws(p + 1, end);
            if (p >= end)
                return -1;
            Col *c = find_col(ps, &hint);
            if (c == NULL || c->last_row == r)
                return -1; /* too many columns, or a duplicate key */
            c->last_row = r;
            if (read_value(ps, &p, end, c) != 0)
                return -1;
            p = skip_ws(p, end);
            if (p < end && *p == ',') {
                p = skip_ws(p + 1, end);
                continue;
            }
            if (p < end && *p == '}') {
                p++;
                break;
            }
            return -1;
        }
    }
    /* columns this record does not have: null */
    for (int i = 0; i < ps->ncols; i++) {
        Col *c = &ps->cols[i];
        if (c->last_row == r)
            continue;
        set_null(c, r);
    }
    ps->rows++;
    *pp = p;
    return 0;
}

static int parse_block(Parser *ps) {
    const uint8_t *p = ps->start, *end = ps->end;
    while (p < end) {
        p = skip_ws(p, end);
        if (p >= end)
            break;
        if (*p == '\n') {
            p++;
            continue;
        }
        if (*p != '{')
            return -1;
        if (read_record(ps, &p, end) != 0)
            return -1;
        p = skip_ws(p, end);
        if (p < end) {
            if (*p != '\n')
                return -1; /* something after the object on its line */
            p++;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------
 * Python */

static PyObject *bytes_of(const void *data, Py_ssize_t n) {
    return PyBytes_FromStringAndSize((const char *)data, n);
}

static PyObject *column_tuple(Parser *ps, Col *c) {
    static const char *kinds[] = {"null", "string", "int64", "double", "bool"};
    Py_ssize_t n = (Py_ssize_t)ps->rows;
    PyObject *name = PyUnicode_DecodeUTF8(c->name, (Py_ssize_t)c->name_len, "strict");
    PyObject *valid = NULL, *values = NULL, *data = NULL, *out = NULL;
    if (name == NULL)
        return NULL;
    if (c->nulls && c->kind != K_NULL)
        valid = bytes_of(c->valid, n);
    else
        valid = Py_NewRef(Py_None);
    if (valid == NULL)
        goto done;
    if (c->kind == K_STRING) {
        values = bytes_of(c->offsets, (n + 1) * (Py_ssize_t)sizeof(int64_t));
        data = chunk_new(c->data, (Py_ssize_t)c->data_len, c->data_cap);
        c->data = NULL; /* the chunk owns it now */
    } else if (c->kind == K_INT || c->kind == K_DOUBLE) {
        values = bytes_of(c->ints, n * (Py_ssize_t)sizeof(int64_t));
        data = Py_NewRef(Py_None);
    } else if (c->kind == K_BOOL) {
        values = bytes_of(c->bools, n);
        data = Py_NewRef(Py_None);
    } else {
        values = Py_NewRef(Py_None);
        data = Py_NewRef(Py_None);
    }
    if (values == NULL || data == NULL)
        goto done;
    out = Py_BuildValue("(NsNNNn)", name, kinds[c->kind], valid, values, data, c->nulls);
    return out;
done:
    Py_DECREF(name);
    Py_XDECREF(valid);
    Py_XDECREF(values);
    Py_XDECREF(data);
    return NULL;
}

PyDoc_STRVAR(parse_doc,
             "parse(block) -> (rows, columns) or None\n\n"
             "Parse a block of whole JSON lines of flat records. Each column is (name, kind, "
             "validity bytes or None, values, string data or None, null count); kind is "
             "'null', 'string' (values: int64 offsets), 'int64', 'double' or 'bool' (a byte "
             "per row). None: the block is not one this parser reads (pyarrow's does).");

static PyObject *parse(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) != 0)
        return NULL;
    Parser *ps = calloc(1, sizeof(Parser));
    if (ps == NULL) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    ps->start = (const uint8_t *)view.buf;
    ps->end = ps->start + view.len;
    ps->block_len = (size_t)view.len;
    int rc;
#if defined(__linux__)
    ps->c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    if (ps->c_locale == (locale_t)0) {
        free(ps);
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
#endif
    Py_BEGIN_ALLOW_THREADS
    rc = parse_block(ps);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    PyObject *result = NULL;
    if (rc != 0) {
        result = Py_NewRef(Py_None);
    } else {
        PyObject *cols = PyList_New(ps->ncols);
        if (cols != NULL) {
            int i;
            for (i = 0; i < ps->ncols; i++) {
                PyObject *t = column_tuple(ps, &ps->cols[i]);
                if (t == NULL)
                    break;
                PyList_SET_ITEM(cols, i, t);
            }
            if (i == ps->ncols)
                result = Py_BuildValue("(nN)", (Py_ssize_t)ps->rows, cols);
            else
                Py_DECREF(cols);
        }
    }
    free_cols(ps);
#if defined(__linux__)
    freelocale(ps->c_locale);
#endif
    free(ps);
    return result;
}

static PyMethodDef methods[] = {
    {"parse", parse, METH_O, parse_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_jsonl", "A strict parser of flat JSON-lines blocks into columns.",
    -1, methods,
};

PyMODINIT_FUNC PyInit__jsonl(void) {
    if (PyType_Ready(&ChunkType) < 0)
        return NULL;
    pthread_atfork(NULL, NULL, pool_after_fork);
    return PyModule_Create(&module);
}
