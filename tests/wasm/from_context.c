/* Test program for the WASM executor: copies /data/context/<name> to /data/outputs/<name>
 * and proves the context (this run's own copy) is writable. */
#include <stdio.h>

int main(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "note.txt";
    char in_path[256], out_path[256];
    snprintf(in_path, sizeof in_path, "/data/context/%s", name);
    snprintf(out_path, sizeof out_path, "/data/outputs/%s", name);
    FILE *scratch = fopen("/data/context/scratch.txt", "w");
    if (!scratch) {
        fprintf(stderr, "the context is not writable\n");
        return 2;
    }
    fclose(scratch);
    FILE *in = fopen(in_path, "rb"), *out = fopen(out_path, "wb");
    if (!in || !out) {
        fprintf(stderr, "cannot open %s or %s\n", in_path, out_path);
        return 1;
    }
    char buffer[4096];
    size_t got;
    while ((got = fread(buffer, 1, sizeof buffer, in)) > 0)
        fwrite(buffer, 1, got, out);
    fclose(in);
    fclose(out);
    printf("copied %s\n", name);
    return 0;
}
