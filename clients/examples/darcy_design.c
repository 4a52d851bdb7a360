/* darcy_design (C): a design loop that asks pdeserve for the Darcy pressure once per step.
 *
 * The design variable is the fraction d of a layered medium that conducts well: on an n x n grid,
 * a[i][j] = 12 where the tilted bands ((2 i + j) mod w) / w < d, else 3 (w = n / 4; not symmetric in i
 * and j). Each step solves -div(a grad u) = 1 with the served surrogate, reads the answer's check and
 * moves d to bring the mean pressure to --target-mean (more conducting medium, lower pressure).
 *
 * The check is acted on: when the estimated relative L2 error is absent or above --max-estimate, the step
 * asks again with a --tolerance (the server refines the answer with its iterative solver until the
 * relative residual meets it); when the model has no refinement, with reference set (the classical
 * solution). The same loop in Fortran: darcy_design.f90.
 *
 *   darcy_design_c --target 127.0.0.1:9000 --steps 5 --resolution 64 [--max-estimate 0.05]
 *                  [--tolerance 1e-6] [--target-mean 0.008] [--dump-dir DIR]
 *
 * Output: one "step=K ..." line per step, then a summary; exit 1 when a call fails (status printed).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pdeserve/pdeserve.h"

typedef struct {
  const char *target, *model, *dump_dir;
  int steps, n;
  double max_estimate, tolerance, target_mean;
} options;

static void coefficient(int n, double d, float *a) {
  int w = n / 4 > 1 ? n / 4 : 1;
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) a[(size_t)i * n + j] = ((2 * i + j) % w) < d * w ? 12.0f : 3.0f;
}

static int dump(const char *dir, const char *what, int step, const void *data, size_t bytes, const char *ext) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s_step%d.%s", dir, what, step, ext);
  FILE *f = fopen(path, "wb");
  if (f == NULL || fwrite(data, 1, bytes, f) != bytes) {
    fprintf(stderr, "darcy_design_c: cannot write %s\n", path);
    if (f) fclose(f);
    return 1;
  }
  return fclose(f) != 0;
}

static int failed(const char *what, const pdeserve_error *err) {
  fprintf(stderr, "darcy_design_c: %s failed: %s (%d): %s\n", what, pdeserve_status_name(err->code), err->code,
          err->message);
  return 1;
}

static const char *path_name(int path) {
  static const char *names[] = {"UNSPECIFIED", "SURROGATE", "REFINED", "CLASSICAL"};
  return path >= 0 && path <= 3 ? names[path] : "UNKNOWN";
}

static int parse(int argc, char **argv, options *o) {
  for (int k = 1; k < argc; ++k) {
    const char *flag = argv[k], *value = k + 1 < argc ? argv[k + 1] : NULL;
    if (strcmp(flag, "--help") == 0) {
      puts("usage: darcy_design_c [--target HOST:PORT] [--model NAME] [--steps N] [--resolution N]\n"
           "       [--max-estimate E] [--tolerance T] [--target-mean M] [--dump-dir DIR]");
      exit(0);
    }
    if (value == NULL) {
      fprintf(stderr, "darcy_design_c: %s needs a value\n", flag);
      return 2;
    }
    ++k;
    if (strcmp(flag, "--target") == 0) o->target = value;
    else if (strcmp(flag, "--model") == 0) o->model = value;
    else if (strcmp(flag, "--dump-dir") == 0) o->dump_dir = value;
    else if (strcmp(flag, "--steps") == 0) o->steps = atoi(value);
    else if (strcmp(flag, "--resolution") == 0) o->n = atoi(value);
    else if (strcmp(flag, "--max-estimate") == 0) o->max_estimate = atof(value);
    else if (strcmp(flag, "--tolerance") == 0) o->tolerance = atof(value);
    else if (strcmp(flag, "--target-mean") == 0) o->target_mean = atof(value);
    else {
      fprintf(stderr, "darcy_design_c: unknown option %s\n", flag);
      return 2;
    }
  }
  return o->steps < 1 || o->n < 1 ? 2 : 0;
}

int main(int argc, char **argv) {
  options o = {"127.0.0.1:9000", "darcy-fno", NULL, 5, 64, 0.05, 1e-6, 0.008};
  if (parse(argc, argv, &o) != 0) return 2;
  const int n = o.n;
  const int64_t shape[2] = {n, n};
  float *a = malloc(sizeof(float) * n * n), *u = malloc(sizeof(float) * n * n);
  double *u64 = malloc(sizeof(double) * n * n);
  if (!a || !u || !u64) return 1;

  pdeserve_error err;
  pdeserve_client *client = NULL;
  pdeserve_options *opts = pdeserve_options_new();
  pdeserve_options_set_deadline(opts, 30.0, NULL);
  int rc = pdeserve_client_open(o.target, opts, &client, &err);
  pdeserve_options_free(opts);
  if (rc != PDESERVE_OK) return failed("open", &err);

  double d = 0.5, mean = 0;
  int fallbacks = 0;
  for (int step = 1; step <= o.steps; ++step) {
    coefficient(n, d, a);
    pdeserve_request *request = NULL;
    pdeserve_answer *answer = NULL;
    pdeserve_check check;
    if (pdeserve_request_new(o.model, NULL, &request, &err) ||
        pdeserve_request_add_input(request, "a", PDESERVE_FLOAT32, PDESERVE_ROW_MAJOR, a, 2, shape, &err) ||
        pdeserve_solve(client, request, &answer, &err) ||
        pdeserve_answer_output_shaped(answer, "u", PDESERVE_FLOAT32, PDESERVE_ROW_MAJOR, u, 2, shape, &err) ||
        pdeserve_answer_check(answer, 0, &check, &err))
      return failed("Solve", &err);
    const char *fallback = "none";
    double estimate = check.has_estimate ? check.estimated_relative_l2 : -1;
    int path = check.path;
    for (size_t k = 0; k < (size_t)n * n; ++k) u64[k] = u[k];
    if (!check.has_estimate || check.estimated_relative_l2 > o.max_estimate) {
      /* not good enough: ask for an answer that meets a tolerance, or for the classical solution */
      pdeserve_answer *better = NULL;
      pdeserve_request_set_tolerance(request, o.tolerance, NULL);
      rc = pdeserve_solve(client, request, &better, &err);
      if (rc == PDESERVE_OK) {
        fallback = "tolerance";
        rc = pdeserve_answer_output_shaped(better, "u", PDESERVE_FLOAT64, PDESERVE_ROW_MAJOR, u64, 2, shape, &err);
      } else if (rc == PDESERVE_FAILED_PRECONDITION) {
        fallback = "reference";
        pdeserve_request_set_tolerance(request, 0.0, NULL);
        pdeserve_request_set_reference(request, 1, NULL);
        rc = pdeserve_solve(client, request, &better, &err);
        if (rc == PDESERVE_OK)
          rc = pdeserve_answer_reference_output(better, "u", PDESERVE_FLOAT64, PDESERVE_ROW_MAJOR, u64, 2, shape,
                                                &err);
      }
      if (rc != PDESERVE_OK) return failed("Solve (fallback)", &err);
      pdeserve_check better_check;
      if (pdeserve_answer_check(better, 0, &better_check, &err) == PDESERVE_OK)
        path = strcmp(fallback, "reference") == 0 ? PDESERVE_PATH_CLASSICAL : better_check.path;
      pdeserve_answer_free(better);
      ++fallbacks;
    }
    mean = 0;
    double umax = -INFINITY;
    for (size_t k = 0; k < (size_t)n * n; ++k) {
      mean += u64[k];
      if (u64[k] > umax) umax = u64[k];
    }
    mean /= (double)n * n;
    printf("step=%d d=%.9e u_mean=%.9e u_max=%.9e estimate=%.9e path=%s fallback=%s version=%s\n", step, d, mean,
           umax, estimate, path_name(path), fallback, pdeserve_answer_version(answer));
    if (o.dump_dir) {
      if (dump(o.dump_dir, "a", step, a, sizeof(float) * n * n, "f32") ||
          dump(o.dump_dir, "u", step, u, sizeof(float) * n * n, "f32") ||
          (strcmp(fallback, "none") != 0 && dump(o.dump_dir, "u_fallback", step, u64, sizeof(double) * n * n, "f64")))
        return 1;
    }
    pdeserve_answer_free(answer);
    pdeserve_request_free(request);
    /* design update: the mean pressure falls as d grows */
    d += 0.5 * (mean - o.target_mean) / o.target_mean;
    d = d < 0.05 ? 0.05 : d > 0.95 ? 0.95 : d;
  }
  printf("steps=%d fallbacks=%d d=%.9e u_mean=%.9e\n", o.steps, fallbacks, d, mean);
  pdeserve_client_close(client);
  free(a);
  free(u);
  free(u64);
  return 0;
}
