"""it/information_security_policy_en.pdf - Information Security Policy (English, core Helvetica font).

Header and "Page N of M" footer on every page, classification table. ASCII only (core PDF fonts).
"""

TITLE = "Information Security Policy"
HEADER_LEFT = "Qinghe Smartlink Technology Co., Ltd."
HEADER_RIGHT = "Information Security Policy v3.1 - INTERNAL"

BLOCKS = [
    ("title", "Information Security Policy"),
    (
        "meta",
        "Document ID: QH-SEC-POL-001   Version: 3.1   Effective date: 1 March 2024   "
        "Owner: Gao Peng, Chief Information Security Officer (CISO)   Approved by: Lin Qihang, CEO",
    ),
    ("h1", "1. Purpose and Scope"),
    (
        "p",
        "This policy sets out the rules that protect the information assets of Qinghe Smartlink Technology Co., Ltd. "
        'and its subsidiaries ("Qinghe" or "the Company"), including customer data collected by the Qinghe Cloud '
        "IoT platform, source code, hardware designs and business records. It applies to all employees, interns, "
        "contractors and third parties who access Company systems, in every office including the Singapore subsidiary.",
    ),
    (
        "p",
        "The Information Security Committee, chaired by the CISO, reviews this policy at least once a year. "
        "Department heads are responsible for making sure that their teams follow it.",
    ),
    ("h1", "2. Information Classification"),
    (
        "p",
        "Every document, dataset and system must be assigned one of four classification levels. "
        "When in doubt, the data owner decides, and the higher level applies until a decision is made.",
    ),
    (
        "table",
        ["Level", "Examples", "Handling rules"],
        [
            ["Public", "Product brochures, press releases, published datasheets", "May be shared freely"],
            [
                "Internal",
                "Org charts, policies, meeting minutes, intranet pages",
                "Employees only; default level",
            ],
            [
                "Confidential",
                "Customer contracts, pricing, personal data, unreleased roadmaps",
                "Need-to-know; encrypt when sent outside Qinghe",
            ],
            [
                "Secret",
                "Source code signing keys, chip-level designs, M&A plans",
                "Named individuals only; external sharing needs CISO approval",
            ],
        ],
        [32, 78, 70],
    ),
    (
        "p",
        "Documents classified as Confidential or Secret must carry the classification label in the header or footer. "
        "Printed Secret documents must be collected from the printer immediately and shredded after use.",
    ),
    ("break",),
    ("h1", "3. Acceptable Use"),
    (
        "p",
        "Company devices, e-mail and networks are provided for business purposes. Limited personal use is tolerated "
        "as long as it does not interfere with work or create security risks. Employees must not install pirated "
        "software, mine cryptocurrency, or use Company resources to access illegal content.",
    ),
    (
        "p",
        "Customer data must only be processed in approved systems. Uploading Internal, Confidential or Secret "
        "information to public AI chatbots, translation websites or personal cloud storage is prohibited.",
    ),
    ("h1", "4. Access Control and Passwords"),
    (
        "p",
        "Access is granted on the principle of least privilege and must be approved by the data owner. "
        "Managers review the access rights of their team members every six months.",
    ),
    (
        "p",
        "Passwords must follow the rules in the Employee IT Service Handbook (minimum 12 characters, changed every 90 days). "
        "Multi-factor authentication with the Qinghe Token app is mandatory for VPN, webmail and all finance systems.",
    ),
    (
        "p",
        "Shared or generic accounts are not allowed, except for service accounts registered with the IT department. "
        "Accounts of departing employees are disabled at 18:00 on their last working day.",
    ),
    ("h1", "5. Clean Desk and Screen Lock"),
    (
        "p",
        "Screens must be locked whenever a device is left unattended (Windows+L or Control+Command+Q). "
        "Devices lock automatically after 5 minutes of inactivity. At the end of the day, Confidential and Secret "
        "papers must be stored in a locked drawer.",
    ),
    ("h1", "6. Removable Media"),
    (
        "p",
        "USB storage devices are blocked on all Company computers by default. An employee who needs to use a USB drive "
        "must submit an exception request in the ITSM portal with approval from their department head; "
        "an approved exception is valid for 30 days and only for encrypted drives issued by the IT department.",
    ),
    ("break",),
    ("h1", "7. Security Incidents"),
    (
        "p",
        "A security incident is any event that may compromise the confidentiality, integrity or availability of "
        "Company information, for example a lost laptop, a malware infection, a suspected data leak or "
        "unauthorised access to a customer account.",
    ),
    (
        "p",
        "Employees must report any suspected security incident within 1 hour of discovery by e-mail to "
        "security@qinghe-tech.com or by calling the security hotline at ext. 8999, which is staffed 24 hours a day.",
    ),
    (
        "p",
        "Do not try to investigate an incident yourself, and do not switch off an infected computer; disconnect it "
        "from the network and wait for the security team. Incidents involving personal data are assessed by the "
        "Legal and Compliance Department within 24 hours to decide whether regulators must be notified.",
    ),
    ("h1", "8. Phishing"),
    (
        "p",
        'Suspicious e-mails must not be opened or answered. Use the "Report Phishing" button in Outlook, or forward '
        "the message as an attachment to phishing@qinghe-tech.com. The security team runs simulated phishing "
        "exercises every quarter; employees who click on a simulated phishing link three times within one year "
        "must attend a one-hour face-to-face refresher session.",
    ),
    ("h1", "9. Security Awareness Training"),
    (
        "p",
        "All new employees must complete the online security awareness course on the Qinghe Learning platform within "
        "30 days of joining. Every employee must also pass the annual refresher course by 30 November each year. "
        "The pass mark for the final quiz is 80%, and the quiz may be retaken up to three times.",
    ),
    ("h1", "10. Third Parties"),
    (
        "p",
        "Suppliers who will access Confidential or Secret information must sign a non-disclosure agreement and pass "
        "a security assessment before access is granted. Contractor accounts expire automatically after 90 days "
        "and must be renewed by the sponsoring manager.",
    ),
    ("h1", "11. Violations"),
    (
        "p",
        "Violations of this policy may lead to disciplinary action up to and including termination of employment, "
        "and may be reported to law enforcement where required. Questions about this policy can be sent to the "
        "Information Security Office at infosec@qinghe-tech.com.",
    ),
]
