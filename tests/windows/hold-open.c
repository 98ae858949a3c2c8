/* Test-only: holds a browser's history database open the way Chromium's SQLite does on
 * Windows while it runs: read/write access, sharing read and write (not delete), and the
 * exclusive-mode byte-range lock SQLite keeps at 1 GiB (PENDING_BYTE .. the shared range).
 * The agent must still copy the file. Prints "holding" once it has the handle and the lock.
 *
 *   hold-open.exe PATH SECONDS */
#include <stdio.h>
#include <stdlib.h>
#include <windows.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: hold-open PATH SECONDS\n");
        return 2;
    }
    HANDLE h = CreateFileA(argv[1], GENERIC_READ | GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE,
                           NULL, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
    if (h == INVALID_HANDLE_VALUE) {
        fprintf(stderr, "cannot open %s: error %lu\n", argv[1], GetLastError());
        return 1;
    }
    if (!LockFile(h, 0x40000000, 0, 0x202, 0)) {
        fprintf(stderr, "cannot lock %s: error %lu\n", argv[1], GetLastError());
        return 1;
    }
    printf("holding\n");
    fflush(stdout);
    Sleep((DWORD)atoi(argv[2]) * 1000);
    CloseHandle(h);
    return 0;
}
