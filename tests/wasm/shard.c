/* Test program for sharded jobs: upper-cases every file in /data/inputs into
 * /data/outputs/<name>.upper, writes /data/outputs/shard.txt = "INDEX/COUNT" from
 * FORM_SHARD_INDEX and FORM_SHARD_COUNT, then keeps running for argv[1] seconds (so a test can
 * kill its node while it runs). */
#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int upcase(const char *name) {
    char in_path[512], out_path[512];
    snprintf(in_path, sizeof in_path, "/data/inputs/%s", name);
    snprintf(out_path, sizeof out_path, "/data/outputs/%s.upper", name);
    FILE *in = fopen(in_path, "rb");
    FILE *out = fopen(out_path, "wb");
    if (!in || !out) {
        fprintf(stderr, "cannot convert %s\n", name);
        return 1;
    }
    int c;
    while ((c = fgetc(in)) != EOF) fputc(toupper(c), out);
    fclose(in);
    fclose(out);
    return 0;
}

int main(int argc, char **argv) {
    const char *index = getenv("FORM_SHARD_INDEX");
    const char *count = getenv("FORM_SHARD_COUNT");
    int seconds = argc > 1 ? atoi(argv[1]) : 0;
    DIR *dir = opendir("/data/inputs");
    if (dir) {
        struct dirent *entry;
        while ((entry = readdir(dir)) != NULL) {
            if (entry->d_name[0] == '.') continue;
            if (upcase(entry->d_name)) return 1;
        }
        closedir(dir);
    }
    FILE *out = fopen("/data/outputs/shard.txt", "w");
    if (!out) return 1;
    fprintf(out, "%s/%s\n", index ? index : "-", count ? count : "-");
    fclose(out);
    printf("shard %s of %s\n", index ? index : "-", count ? count : "-");
    fflush(stdout);
    time_t start = time(NULL);
    while (time(NULL) - start < seconds) {
    }
    return 0;
}
