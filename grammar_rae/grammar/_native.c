/* Native kernels of grammar_rae: the exact parser's LR driver and the CPU masked decoder.
 *
 * 1. The backtracking LR driver of grammar_rae/grammar/lr.py.
 *
 * Same algorithm, same tables: tokenize by longest match, run the LR(1) automaton, try every
 * alternative of every conflicting cell, and return the pre-order (leftmost-derivation) rule list
 * of the single parse tree. Anything unusual goes back to Python, which explains it:
 *   list  -> the parse;   None -> not in the language;   2 -> ambiguous;   3 -> over budget.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>

#define SHIFT 1
#define REDUCE 2
#define ACCEPT 3

typedef struct {
    int n_terms, n_states, n_nt, skip_space, budget_per_token;
    int *action, *conflicts, *go, *rule_lhs, *rule_len;
    /* tokenizer: terminals grouped by first byte, longest first */
    int *term_len;
    char **term;
    int first_start[257]; /* terminals with first byte b: by_first[first_start[b] .. first_start[b+1]) */
    int *by_first;
} Tables;

typedef struct { int *p; Py_ssize_t n, cap; } IntVec;

static int vec_reserve(IntVec *v, Py_ssize_t cap) {
    if (cap <= v->cap) return 0;
    Py_ssize_t c = v->cap ? v->cap : 64;
    while (c < cap) c *= 2;
    int *q = (int *)realloc(v->p, (size_t)c * sizeof(int));
    if (!q) return -1;
    v->p = q; v->cap = c;
    return 0;
}
static inline int vec_push(IntVec *v, int x) {
    if (v->n == v->cap && vec_reserve(v, v->n + 1)) return -1;
    v->p[v->n++] = x;
    return 0;
}

static void tables_free(PyObject *capsule) {
    Tables *t = (Tables *)PyCapsule_GetPointer(capsule, "grammar_rae.lr_tables");
    if (!t) return;
    free(t->action); free(t->conflicts); free(t->go); free(t->rule_lhs); free(t->rule_len);
    for (int i = 0; i < t->n_terms; i++) free(t->term[i]);
    free(t->term); free(t->term_len); free(t->by_first);
    free(t);
}

static int *copy_ints(PyObject *bytes, Py_ssize_t expect) {
    char *buf; Py_ssize_t len;
    if (PyBytes_AsStringAndSize(bytes, &buf, &len) < 0) return NULL;
    if (expect >= 0 && len != expect * (Py_ssize_t)sizeof(int)) {
        PyErr_SetString(PyExc_ValueError, "table has the wrong size");
        return NULL;
    }
    int *p = (int *)malloc(len ? (size_t)len : 1);
    if (!p) { PyErr_NoMemory(); return NULL; }
    memcpy(p, buf, (size_t)len);
    return p;
}

static PyObject *make_tables(PyObject *self, PyObject *args) {
    PyObject *terms, *action, *conflicts, *go, *rule_lhs, *rule_len;
    int skip_space, n_terms, n_states, n_nt, budget;
    if (!PyArg_ParseTuple(args, "O!iiiiSSSSSi", &PyList_Type, &terms, &skip_space, &n_terms, &n_states,
                          &n_nt, &action, &conflicts, &go, &rule_lhs, &rule_len, &budget))
        return NULL;
    if (PyList_GET_SIZE(terms) != n_terms) {
        PyErr_SetString(PyExc_ValueError, "terminal list does not match n_terms");
        return NULL;
    }
    Tables *t = (Tables *)calloc(1, sizeof(Tables));
    if (!t) return PyErr_NoMemory();
    t->n_terms = n_terms; t->n_states = n_states; t->n_nt = n_nt;
    t->skip_space = skip_space; t->budget_per_token = budget;
    PyObject *capsule = PyCapsule_New(t, "grammar_rae.lr_tables", tables_free);
    if (!capsule) { free(t); return NULL; }
    t->term = (char **)calloc((size_t)n_terms, sizeof(char *));
    t->term_len = (int *)calloc((size_t)n_terms, sizeof(int));
    t->by_first = (int *)calloc((size_t)n_terms + 1, sizeof(int));
    if (!t->term || !t->term_len || !t->by_first) { Py_DECREF(capsule); return PyErr_NoMemory(); }
    for (int i = 0; i < n_terms; i++) {
        char *s; Py_ssize_t len;
        if (PyBytes_AsStringAndSize(PyList_GET_ITEM(terms, i), &s, &len) < 0 || len == 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "empty terminal");
            Py_DECREF(capsule); return NULL;
        }
        t->term[i] = (char *)malloc((size_t)len);
        if (!t->term[i]) { Py_DECREF(capsule); return PyErr_NoMemory(); }
        memcpy(t->term[i], s, (size_t)len);
        t->term_len[i] = (int)len;
    }
    /* bucket terminals by first byte; within a bucket keep the given order (longest first) */
    int counts[257] = {0};
    for (int i = 0; i < n_terms; i++) counts[(unsigned char)t->term[i][0] + 1]++;
    t->first_start[0] = 0;
    for (int b = 1; b <= 256; b++) t->first_start[b] = t->first_start[b - 1] + counts[b];
    int fill[256];
    for (int b = 0; b < 256; b++) fill[b] = t->first_start[b];
    for (int i = 0; i < n_terms; i++) t->by_first[fill[(unsigned char)t->term[i][0]]++] = i;

    Py_ssize_t n_rules = PyBytes_GET_SIZE(rule_lhs) / (Py_ssize_t)sizeof(int);
    if (!(t->action = copy_ints(action, (Py_ssize_t)n_states * (n_terms + 1))) ||
        !(t->conflicts = copy_ints(conflicts, -1)) ||
        !(t->go = copy_ints(go, (Py_ssize_t)n_states * n_nt)) ||
        !(t->rule_lhs = copy_ints(rule_lhs, n_rules)) ||
        !(t->rule_len = copy_ints(rule_len, n_rules))) {
        Py_DECREF(capsule); return NULL;
    }
    return capsule;
}

/* Longest-match tokenization; returns 0, or -1 on a byte no terminal starts with. */
static int tokenize(const Tables *t, const char *s, Py_ssize_t n, IntVec *out) {
    Py_ssize_t i = 0;
    out->n = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (t->skip_space && (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v')) {
            i++; continue;
        }
        int found = -1;
        for (int k = t->first_start[c]; k < t->first_start[c + 1]; k++) {
            int id = t->by_first[k], len = t->term_len[id];
            if (i + len <= n && memcmp(s + i, t->term[id], (size_t)len) == 0) { found = id; break; }
        }
        if (found < 0) return -1;
        if (vec_push(out, found)) return -2;
        i += t->term_len[found];
    }
    return vec_push(out, t->n_terms) ? -2 : 0; /* end of input */
}

typedef struct { int acts, next, pos; Py_ssize_t saved_at, depth, n_nodes; } Choice;

typedef struct {
    IntVec tokens, states, values, saved, node_rule, node_first, node_next, order, kids;
    Choice *choices; Py_ssize_t n_choices, cap_choices;
} Work;

static void work_free(Work *w) {
    free(w->tokens.p); free(w->states.p); free(w->values.p); free(w->saved.p);
    free(w->node_rule.p); free(w->node_first.p); free(w->node_next.p); free(w->order.p);
    free(w->kids.p); free(w->choices);
}

/* Pre-order rules of the tree under `root`, as a new Python list. */
static PyObject *preorder(Work *w, int root) {
    w->order.n = 0; w->kids.n = 0;
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    if (vec_push(&w->kids, root)) { Py_DECREF(out); return PyErr_NoMemory(); }
    while (w->kids.n) {
        int node = w->kids.p[--w->kids.n];
        PyObject *r = PyLong_FromLong(w->node_rule.p[node]);
        if (!r || PyList_Append(out, r)) { Py_XDECREF(r); Py_DECREF(out); return NULL; }
        Py_DECREF(r);
        Py_ssize_t mark = w->kids.n;
        for (int c = w->node_first.p[node]; c >= 0; c = w->node_next.p[c])
            if (vec_push(&w->kids, c)) { Py_DECREF(out); return PyErr_NoMemory(); }
        /* reverse the children just pushed so the leftmost is popped first */
        for (Py_ssize_t a = mark, b = w->kids.n - 1; a < b; a++, b--) {
            int tmp = w->kids.p[a]; w->kids.p[a] = w->kids.p[b]; w->kids.p[b] = tmp;
        }
    }
    return out;
}

static PyObject *parse(PyObject *self, PyObject *args) {
    PyObject *capsule, *str;
    if (!PyArg_ParseTuple(args, "OU", &capsule, &str)) return NULL;
    const Tables *t = (const Tables *)PyCapsule_GetPointer(capsule, "grammar_rae.lr_tables");
    if (!t) return NULL;
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(str, &n);
    if (!s) return NULL;

    Work w;
    memset(&w, 0, sizeof w);
    PyObject *result = NULL;
    int rc = tokenize(t, s, n, &w.tokens);
    if (rc == -2) { PyErr_NoMemory(); goto done; }
    if (rc == -1) { Py_INCREF(Py_None); result = Py_None; goto done; }

    const int T1 = t->n_terms + 1;
    long budget = (long)t->budget_per_token * (long)w.tokens.n + 1000;
    int act = -1, pos = 0;
    if (vec_push(&w.states, 0) || vec_push(&w.values, -1)) { PyErr_NoMemory(); goto done; }
    for (;;) {
        if (--budget < 0) { result = PyLong_FromLong(3); goto done; }
        if (act < 0) {
            int cell = t->action[(Py_ssize_t)w.states.p[w.states.n - 1] * T1 + w.tokens.p[pos]];
            if (cell >= 0) {
                act = cell; /* 0 is a dead end */
            } else {
                /* a conflict: remember the state to come back to, take the first alternative */
                if (w.n_choices == w.cap_choices) {
                    Py_ssize_t c = w.cap_choices ? 2 * w.cap_choices : 16;
                    Choice *q = (Choice *)realloc(w.choices, (size_t)c * sizeof(Choice));
                    if (!q) { PyErr_NoMemory(); goto done; }
                    w.choices = q; w.cap_choices = c;
                }
                Choice *ch = &w.choices[w.n_choices++];
                ch->acts = -cell; ch->next = 1; ch->pos = pos;
                ch->saved_at = w.saved.n; ch->depth = w.states.n; ch->n_nodes = w.node_rule.n;
                if (vec_reserve(&w.saved, w.saved.n + 2 * w.states.n)) { PyErr_NoMemory(); goto done; }
                memcpy(w.saved.p + w.saved.n, w.states.p, (size_t)w.states.n * sizeof(int));
                memcpy(w.saved.p + w.saved.n + w.states.n, w.values.p, (size_t)w.states.n * sizeof(int));
                w.saved.n += 2 * w.states.n;
                act = t->conflicts[-cell];
            }
        }
        int kind = act & 3;
        if (kind == SHIFT) {
            if (vec_push(&w.states, act >> 2) || vec_push(&w.values, -1)) { PyErr_NoMemory(); goto done; }
            pos++;
            act = -1;
            continue;
        }
        if (kind == REDUCE) {
            int r = act >> 2, len = t->rule_len[r];
            int node = (int)w.node_rule.n, prev = -1;
            if (vec_push(&w.node_rule, r) || vec_push(&w.node_first, -1) || vec_push(&w.node_next, -1)) {
                PyErr_NoMemory(); goto done;
            }
            for (Py_ssize_t k = w.values.n - len; k < w.values.n; k++) {
                int child = w.values.p[k];
                if (child < 0) continue;
                if (prev < 0) w.node_first.p[node] = child; else w.node_next.p[prev] = child;
                w.node_next.p[child] = -1;
                prev = child;
            }
            w.states.n -= len; w.values.n -= len;
            int next = t->go[(Py_ssize_t)w.states.p[w.states.n - 1] * t->n_nt + t->rule_lhs[r]];
            if (next < 0) { PyErr_SetString(PyExc_RuntimeError, "corrupt LR tables"); goto done; }
            if (vec_push(&w.states, next) || vec_push(&w.values, node)) { PyErr_NoMemory(); goto done; }
            act = -1;
            continue;
        }
        if (kind == ACCEPT) {
            if (result) { Py_DECREF(result); result = PyLong_FromLong(2); goto done; } /* two trees */
            result = preorder(&w, w.values.p[w.values.n - 1]);
            if (!result) goto done;
        }
        /* dead end or accepted: resume the most recent untried alternative */
        while (w.n_choices && t->conflicts[w.choices[w.n_choices - 1].acts + w.choices[w.n_choices - 1].next] == 0) {
            w.saved.n = w.choices[w.n_choices - 1].saved_at;
            w.n_choices--;
        }
        if (!w.n_choices) {
            if (!result) { Py_INCREF(Py_None); result = Py_None; }
            goto done;
        }
        Choice *ch = &w.choices[w.n_choices - 1];
        act = t->conflicts[ch->acts + ch->next++];
        pos = ch->pos;
        w.states.n = w.values.n = ch->depth;
        memcpy(w.states.p, w.saved.p + ch->saved_at, (size_t)ch->depth * sizeof(int));
        memcpy(w.values.p, w.saved.p + ch->saved_at + ch->depth, (size_t)ch->depth * sizeof(int));
        w.node_rule.n = w.node_first.n = w.node_next.n = ch->n_nodes;
    }
done:
    work_free(&w);
    return result;
}

/* 2. Grammar-masked argmax decoding on the CPU (grammar_rae/models/decoding.py has the tensor
 * version and the per-sample reference). scores: float32 [B, T, R] (logits, or logits/temperature
 * plus Gumbel noise when sampling); cand: int32 [n_lhs, M], the rules each LHS may choose, -1 padded;
 * push: int32 [R, W], a rule's non-terminals right to left; n_push: int32 [R].
 * Writes rules: int64 [B, T] and complete: uint8 [B]. Only the candidate rules of the popped
 * left-hand side are compared, so a step costs a few comparisons instead of R. */
static PyObject *masked_decode(PyObject *self, PyObject *args) {
    Py_buffer sc, cand, push, npush, rules, complete;
    int B, T, R, n_lhs, M, W, start, pad_lhs, pad_rule;
    if (!PyArg_ParseTuple(args, "y*y*y*y*w*w*iiiiiiiii", &sc, &cand, &push, &npush, &rules, &complete,
                          &B, &T, &R, &n_lhs, &M, &W, &start, &pad_lhs, &pad_rule))
        return NULL;
    PyObject *ret = NULL;
    int *stack = NULL;
    if (sc.len != (Py_ssize_t)B * T * R * 4 || cand.len != (Py_ssize_t)n_lhs * M * 4 ||
        push.len != (Py_ssize_t)R * W * 4 || npush.len != (Py_ssize_t)R * 4 ||
        rules.len != (Py_ssize_t)B * T * 8 || complete.len != B) {
        PyErr_SetString(PyExc_ValueError, "masked_decode: buffer sizes do not match the shapes");
        goto out;
    }
    const float *S = (const float *)sc.buf;
    const int *C = (const int *)cand.buf, *P = (const int *)push.buf, *NP = (const int *)npush.buf;
    long long *out = (long long *)rules.buf;
    unsigned char *ok = (unsigned char *)complete.buf;
    Py_ssize_t depth = (Py_ssize_t)T * (W > 1 ? W - 1 : 1) + W + 1;
    stack = (int *)malloc((size_t)depth * sizeof(int));
    if (!stack) { PyErr_NoMemory(); goto out; }
    Py_BEGIN_ALLOW_THREADS
    for (int b = 0; b < B; b++) {
        Py_ssize_t sp = 1;
        stack[0] = start;
        long long *row = out + (Py_ssize_t)b * T;
        int t = 0;
        int dead = 0;
        for (; t < T && sp > 0; t++) {
            int lhs = stack[--sp];
            const float *s = S + ((Py_ssize_t)b * T + t) * R;
            const int *c = C + (Py_ssize_t)lhs * M;
            if (lhs < 0 || lhs >= n_lhs || c[0] < 0) { dead = 1; break; } /* an LHS with no usable rule */
            int best = c[0];
            float bv = s[best];
            for (int k = 1; k < M && c[k] >= 0; k++)
                if (s[c[k]] > bv) { bv = s[c[k]]; best = c[k]; } /* first maximum wins, like argmax */
            row[t] = best;
            for (int k = 0; k < NP[best]; k++) stack[sp++] = P[(Py_ssize_t)best * W + k];
        }
        ok[b] = sp == 0 && !dead;
        for (; t < T; t++) row[t] = pad_rule; /* empty stack: the padding LHS allows only padding */
        (void)pad_lhs;
    }
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    ret = Py_None;
out:
    free(stack);
    PyBuffer_Release(&sc); PyBuffer_Release(&cand); PyBuffer_Release(&push); PyBuffer_Release(&npush);
    PyBuffer_Release(&rules); PyBuffer_Release(&complete);
    return ret;
}

static PyMethodDef methods[] = {
    {"make_tables", make_tables, METH_VARARGS, "Pack LR tables and terminals into a capsule."},
    {"parse", parse, METH_VARARGS,
     "parse(tables, string) -> list of rule indices | None (not in the language) | 2 (ambiguous) | 3 (over budget)"},
    {"masked_decode", masked_decode, METH_VARARGS, "Grammar-masked argmax decoding of a [B, T, R] float32 score array."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_native", "Native kernels: exact LR parsing, masked decoding.", -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
