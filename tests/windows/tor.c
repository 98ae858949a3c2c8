/* Test-only Windows programs for the Wine smoke test, from one source:
 *  - copied to tor.exe: a stand-in for Tor that stays alive long enough (10 s) for the agent's
 *    process poll to see it;
 *  - copied to session.exe and given a number of seconds: stands in for a logged-on user's
 *    desktop. Wine shuts its services down when no ordinary program is left running, which
 *    Windows never does; this keeps the agent's service alive for the length of the test. */
#include <stdlib.h>
#include <windows.h>

int main(int argc, char **argv)
{
    int seconds = argc > 1 ? atoi(argv[1]) : 10;
    Sleep((DWORD)seconds * 1000);
    return 0;
}
