/* Test program for the WASM executor: upper-cases /data/inputs/<name> into
 * /data/outputs/<name>.upper and proves that /data/inputs is read-only. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    const char *name = argc > 1 ? argv[1] : "in.txt";
    char in_path[256], out_path[256];
    snprintf(in_path, sizeof in_path, "/data/inputs/%s", name);
    snprintf(out_path, sizeof out_path, "/data/outputs/%s.upper", name);

    FILE *probe = fopen("/data/inputs/probe", "w");
    if (probe) {
        fclose(probe);
        fprintf(stderr, "inputs are writable\n");
        return 2;
    }
    printf("inputs are read-only\n");

    FILE *in = fopen(in_path, "rb");
    if (!in) {
        fprintf(stderr, "cannot open %s\n", in_path);
        return 1;
    }
    FILE *out = fopen(out_path, "wb");
    if (!out) {
        fprintf(stderr, "cannot create %s\n", out_path);
        return 1;
    }
    long count = 0;
    int c;
    while ((c = fgetc(in)) != EOF) {
        fputc(toupper(c), out);
        count++;
    }
    fclose(in);
    fclose(out);
    printf("converted %ld bytes\n", count);
    return 0;
}
